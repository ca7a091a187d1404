import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance } from 'fastify';
import { AppError, errorBody, toAppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Config } from '../config.ts';
import { SIGNALING_PATH } from '../signaling/ws-route.ts';

/**
 * The Fastify instance every kind of node serves on: errors become `{ error: { code,
 * message } }` with the code's status, unknown routes are NOT_FOUND, WebSockets enabled.
 */
export async function createHttpApp(config: Config, log: Logger): Promise<FastifyInstance> {
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
  return app;
}

/** Listens where the config says; returns the URLs clients use. */
export async function listen(app: FastifyInstance, config: Config): Promise<{ httpUrl: string; wsUrl: string }> {
  await app.listen({ host: config.http.host, port: config.http.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : config.http.port;
  const host = config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host;
  return { httpUrl: `http://${host}:${port}`, wsUrl: `ws://${host}:${port}${SIGNALING_PATH}` };
}
