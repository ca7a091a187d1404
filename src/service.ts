import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance } from 'fastify';
import { TokenService } from './auth/tokens.ts';
import { AppError, errorBody, toAppError } from './common/errors.ts';
import { createLogger, type Logger } from './common/logger.ts';
import type { Config } from './config.ts';
import { createMetrics } from './http/metrics.ts';
import { mediaRoutes } from './http/routes/media.ts';
import { opsRoutes } from './http/routes/ops.ts';
import { recordingRoutes } from './http/routes/recordings.ts';
import { webRoutes } from './http/routes/web.ts';
import { RecordingManager } from './recording/recording-manager.ts';
import { Sfu } from './sfu/sfu.ts';
import { SIGNALING_PATH, signalingRoute } from './signaling/ws-route.ts';

export interface Service {
  httpUrl: string;
  wsUrl: string;
  config: Config;
  tokens: TokenService;
  sfu: Sfu;
  recordings: RecordingManager;
  log: Logger;
  app: FastifyInstance;
  /** Idempotent: closes every room, connection and socket. */
  close(): Promise<void>;
}

/** Builds and starts the whole node: HTTP + WebSocket edge and the media engine. */
export async function startService(config: Config, opts: { log?: Logger } = {}): Promise<Service> {
  const log = opts.log ?? createLogger(config.logLevel);
  const tokens = new TokenService(config.auth.apiKey, config.auth.apiSecret);
  const sfu = new Sfu(config, log);
  const metrics = createMetrics(sfu);
  const recordings = new RecordingManager(config.recordingsDir, sfu, log);
  // Fastify's own request logging is off: we log events that matter, with room and participant.
  const app = Fastify({ logger: false, bodyLimit: config.limits.maxMessageBytes });

  app.setErrorHandler((err, req, reply) => {
    const e = toAppError(err);
    if (e.code === 'INTERNAL') log.error({ err, method: req.method, url: req.url }, 'request failed');
    reply.status(e.status).send(errorBody(e));
  });
  app.setNotFoundHandler((req, reply) => {
    const e = new AppError('NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`);
    reply.status(e.status).send(errorBody(e));
  });

  await app.register(websocket, { options: { maxPayload: config.limits.maxMessageBytes * 4 } });
  opsRoutes(app, { sfu, tokens, metrics, config });
  mediaRoutes(app, { sfu, tokens, config });
  recordingRoutes(app, { sfu, tokens, recordings });
  const sessions = signalingRoute(app, { sfu, tokens, config, recordings, log });
  await webRoutes(app, { log });

  await app.listen({ host: config.http.host, port: config.http.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : config.http.port;
  const host = config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host;
  const httpUrl = `http://${host}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    httpUrl,
    wsUrl: `ws://${host}:${port}${SIGNALING_PATH}`,
    config,
    tokens,
    sfu,
    recordings,
    log,
    app,
    close() {
      closing ??= (async () => {
        // Recordings first, so every file is closed and playable before media stops.
        await recordings.close();
        sfu.close();
        for (const s of sessions) s.close();
        await app.close();
      })();
      return closing;
    },
  };
}
