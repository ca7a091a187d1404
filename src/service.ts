import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { TokenService } from './auth/tokens.ts';
import { createLogger, type Logger } from './common/logger.ts';
import type { Config } from './config.ts';
import { createHttpApp, listen } from './http/app.ts';
import { createMetrics } from './http/metrics.ts';
import { mediaRoutes } from './http/routes/media.ts';
import { devTokenRoute, opsRoutes } from './http/routes/ops.ts';
import { recordingRoutes } from './http/routes/recordings.ts';
import { webRoutes } from './http/routes/web.ts';
import { RecordingManager } from './recording/recording-manager.ts';
import { Sfu } from './sfu/sfu.ts';
import { signalingRoute } from './signaling/ws-route.ts';

export interface Service {
  httpUrl: string;
  wsUrl: string;
  config: Config;
  tokens: TokenService;
  sfu: Sfu;
  recordings: RecordingManager;
  metrics: Registry;
  log: Logger;
  app: FastifyInstance;
  /** Idempotent: closes every room, connection and socket. */
  close(): Promise<void>;
}

/**
 * Builds and starts a node with its media engine in this process: HTTP, WebSocket
 * signaling and the SFU. Runs alone when SCV_MEDIA_WORKERS=0, and inside each media
 * worker process behind the edge (src/edge/) otherwise.
 */
export async function startService(config: Config, opts: { log?: Logger; web?: boolean } = {}): Promise<Service> {
  const log = opts.log ?? createLogger(config.logLevel);
  const tokens = new TokenService(config.auth.apiKey, config.auth.apiSecret, config.auth.tokenLimits);
  const sfu = new Sfu(config, log);
  const metrics = createMetrics(sfu);
  const recordings = new RecordingManager(config.recordingsDir, sfu, log);
  const app = await createHttpApp(config, log);
  opsRoutes(app, { sfu, tokens, metrics });
  devTokenRoute(app, { tokens, config });
  mediaRoutes(app, { sfu, tokens, config });
  recordingRoutes(app, { sfu, tokens, recordings });
  const sessions = signalingRoute(app, { sfu, tokens, config, recordings, log });
  // A media worker's port is reached only through the edge, which serves the page itself.
  if (opts.web !== false) await webRoutes(app, { log });

  const { httpUrl, wsUrl } = await listen(app, config);

  let closing: Promise<void> | undefined;
  return {
    httpUrl,
    wsUrl,
    config,
    tokens,
    sfu,
    recordings,
    metrics,
    log,
    app,
    close() {
      closing ??= (async () => {
        const started = Date.now();
        // Recordings first, so every file is closed and playable before media stops.
        await recordings.close();
        log.info({ ms: Date.now() - started }, 'shutdown: recordings closed');
        sfu.close();
        for (const s of sessions) s.close();
        await app.close();
        log.info({ ms: Date.now() - started }, 'shutdown: connections closed');
      })();
      return closing;
    },
  };
}
