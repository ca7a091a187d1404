import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { AppError } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../web');

/**
 * Everything the call page serves: a fixed list, so no request path ever reaches the
 * file system (nothing to traverse). The bundles come from scripts/build-web.ts.
 */
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
  '/dist/app.js': { file: 'dist/app.js', type: 'text/javascript; charset=utf-8' },
  '/dist/app.js.map': { file: 'dist/app.js.map', type: 'application/json; charset=utf-8' },
  '/dist/sdk.js': { file: 'dist/sdk.js', type: 'text/javascript; charset=utf-8' },
  '/dist/sdk.js.map': { file: 'dist/sdk.js.map', type: 'application/json; charset=utf-8' },
  // The SDK's end-to-end encryption worker (docs/e2ee.md), loaded from next to sdk.js.
  '/dist/e2ee-worker.js': { file: 'dist/e2ee-worker.js', type: 'text/javascript; charset=utf-8' },
  '/dist/e2ee-worker.js.map': { file: 'dist/e2ee-worker.js.map', type: 'application/json; charset=utf-8' },
};

let building: Promise<void> | undefined;

/**
 * A fresh clone has no web/dist/ until `npm run build:web` (npm start runs it); a server
 * started any other way (tests, `node src/main.ts`) builds it here once, so `/` always works.
 */
function ensureBundles(log: Logger): Promise<void> {
  if (['app.js', 'sdk.js', 'e2ee-worker.js'].every((f) => existsSync(path.join(WEB_DIR, 'dist', f)))) return Promise.resolve();
  building ??= (async () => {
    log.info('web/dist/ is missing: building the call page');
    try {
      const { buildWeb } = await import('../../../scripts/build-web.ts');
      await buildWeb();
    } catch (err) {
      building = undefined;
      throw new Error(`web/dist/ is missing and could not be built (${(err as Error).message}); run "npm ci" then "npm run build:web"`, {
        cause: err,
      });
    }
  })();
  return building;
}

/** The call page at `/` and the browser bundles under `/dist/`. */
export async function webRoutes(app: FastifyInstance, deps: { log: Logger }): Promise<void> {
  await ensureBundles(deps.log);
  for (const [url, { file, type }] of Object.entries(FILES)) {
    app.get(url, async (_req, reply) => {
      let body: Buffer;
      try {
        body = await readFile(path.join(WEB_DIR, file));
      } catch {
        throw new AppError('NOT_FOUND', `${url} is not built; run "npm run build:web"`);
      }
      // Always revalidate: a rebuilt bundle must reach the next page load.
      return reply.header('content-type', type).header('cache-control', 'no-cache').send(body);
    });
  }
}
