/**
 * Bundles the browser side with esbuild: the SDK (client/index.ts → web/dist/sdk.js, an
 * ES module any page can import), its end-to-end encryption worker
 * (client/e2ee/worker.ts → web/dist/e2ee-worker.js, a classic worker script the SDK loads
 * from next to itself) and the call page's app (web/app.ts → web/dist/app.js).
 * The app imports the SDK at run time from ./sdk.js instead of carrying its own copy, so
 * the page exercises exactly the bundle other pages would use.
 *
 *   node scripts/build-web.ts        (npm run build:web; npm start runs it first)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const WEB_DIST = path.join(root, 'web', 'dist');
const SDK_ENTRY = path.join(root, 'client', 'index.ts');
const WORKER_ENTRY = path.join(root, 'client', 'e2ee', 'worker.ts');

const common: esbuild.BuildOptions = {
  bundle: true,
  format: 'esm',
  // Browsers that have had RTCPeerConnection.restartIce and requestVideoFrameCallback for years.
  target: ['chrome110', 'firefox115', 'safari16'],
  sourcemap: 'linked',
  logLevel: 'warning',
};

/** Keeps the app's `import … from '../client/index.ts'` as `import … from './sdk.js'`. */
const sdkAsExternal: esbuild.Plugin = {
  name: 'sdk-as-external',
  setup(build) {
    build.onResolve({ filter: /client[\\/]index\.ts$/ }, (args) =>
      path.resolve(args.resolveDir, args.path) === SDK_ENTRY ? { path: './sdk.js', external: true } : undefined,
    );
  },
};

/** Builds the three bundles into web/dist/; returns the files written. */
export async function buildWeb(): Promise<string[]> {
  const results = await Promise.all([
    esbuild.build({ ...common, entryPoints: [SDK_ENTRY], outfile: path.join(WEB_DIST, 'sdk.js'), metafile: true }),
    // A worker script: no imports at run time, so an IIFE loads as a classic worker everywhere.
    esbuild.build({ ...common, format: 'iife', entryPoints: [WORKER_ENTRY], outfile: path.join(WEB_DIST, 'e2ee-worker.js'), metafile: true }),
    esbuild.build({ ...common, entryPoints: [path.join(root, 'web', 'app.ts')], outfile: path.join(WEB_DIST, 'app.js'), metafile: true, plugins: [sdkAsExternal] }),
  ]);
  return results.flatMap((r) => Object.keys(r.metafile.outputs));
}

if (import.meta.main) {
  const files = await buildWeb();
  process.stdout.write(`build-web: wrote ${files.join(', ')}\n`);
}
