import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import rateLimit from '@fastify/rate-limit';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { AppError, errorBody, toAppError } from '../common/errors.ts';
import { clip, MAX_PATH_PARAM_LENGTH } from '../common/limits.ts';
import type { Logger } from '../common/logger.ts';
import type { Config } from '../config.ts';
import { SIGNALING_PATH } from '../signaling/ws-route.ts';

/** Health checks and scrapes keep working while a client is over its rate limit. */
const RATE_EXEMPT_PATHS = new Set(['/healthz', '/metrics']);

function sendError(reply: FastifyReply, e: AppError): FastifyReply {
  return reply.status(e.status).header('content-type', 'application/json; charset=utf-8').send(errorBody(e));
}

/**
 * Requests Node's HTTP parser refuses never reach Fastify: an unknown method, a malformed
 * request line, headers over the size limit. They get the same error shape, then the
 * connection is closed (what follows on it cannot be trusted).
 */
function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const e =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new AppError('HEADERS_TOO_LARGE', 'request headers are too large')
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new AppError('REQUEST_TIMEOUT', 'the request did not arrive in time')
        : new AppError('BAD_REQUEST', 'malformed HTTP request');
  const body = JSON.stringify(errorBody(e));
  // A response already under way on this keep-alive socket must not be cut into (Node's own handler checks the same).
  const headerSent = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
  if (socket.writable && !headerSent) {
    socket.write(
      `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * The Fastify instance every kind of node serves on: every error, Fastify's and Node's
 * included, becomes `{ error: { code, message } }` with the code's status; unknown routes
 * are NOT_FOUND; requests are limited per client IP (SCV_HTTP_RATE_LIMIT); WebSockets
 * enabled.
 */
/** `rateExempt`: requests the per-IP rate limit skips (a cluster node's hops: their clients were counted where they came in). */
export async function createHttpApp(config: Config, log: Logger, opts: { rateExempt?: (req: FastifyRequest) => boolean } = {}): Promise<FastifyInstance> {
  // Fastify's own request logging is off: we log events that matter, with room and participant.
  const app = Fastify({
    logger: false,
    bodyLimit: config.limits.maxMessageBytes,
    routerOptions: { maxParamLength: MAX_PATH_PARAM_LENGTH },
    // A bad percent-encoding or an overlong path segment, found by the router before any route.
    frameworkErrors: (err, _req, reply) => sendError(reply, toAppError(err)),
    clientErrorHandler: onClientError,
  });
  app.setErrorHandler((err, req, reply) => {
    // The client went away mid-request (a relayed answer cut short, a body it stopped
    // sending): nobody to answer, and no bug.
    if (reply.raw.destroyed || (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE') {
      log.debug({ method: req.method, url: clip(req.url), err: (err as Error).message }, 'client went away');
      return reply;
    }
    const e = toAppError(err);
    if (e.code === 'INTERNAL') log.error({ err, method: req.method, url: clip(req.url) }, 'request failed');
    return sendError(reply, e);
  });
  const rate = config.limits.httpRate;
  if (rate !== undefined) {
    await app.register(rateLimit, {
      global: true,
      hook: 'onRequest',
      max: rate.max,
      timeWindow: rate.windowMs,
      allowList: (req) => RATE_EXEMPT_PATHS.has(req.url.split('?')[0]!) || opts.rateExempt?.(req) === true,
      errorResponseBuilder: (_req, ctx) => new AppError('RATE_LIMITED', `too many requests from this address; retry in ${ctx.after}`),
    });
  }
  app.setNotFoundHandler({ preHandler: rate === undefined ? [] : [app.rateLimit()] }, (req, reply) => {
    sendError(reply, new AppError('NOT_FOUND', `no route ${clip(req.method, 16)} ${clip(req.url.split('?')[0]!)}`));
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
