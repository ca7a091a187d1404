import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requireGrant, type TokenService } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import type { Config } from '../config.ts';
import { authenticate } from '../http/auth.ts';
import type { MediaWorker } from './media-worker.ts';
import type { WorkerPool } from './worker-pool.ts';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and those the relay recomputes. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'te', 'trailer', 'proxy-connection']);

/** Requests that may create their room go to its worker or, for a new room, the least loaded. */
interface Route {
  room: string;
  creates: boolean;
}

/**
 * Which room an HTTP request is about, from its path (WHIP, WHEP, room admin and
 * recording) or its JSON body (the seed API, room creation). Requests about no room
 * (recordings, bad paths) go to any worker: they share the recordings folder, and the
 * worker gives the same answer the edge would.
 */
function routeOf(method: string, path: string, body: Buffer | undefined): Route | undefined {
  const inPath = /^\/(?:whip|whep|video\/rooms)\/([^/]+)(\/[^/]+)?/.exec(path);
  if (inPath !== null) {
    let room: string;
    try {
      room = decodeURIComponent(inPath[1]!);
    } catch {
      return undefined;
    }
    const kind = path.split('/')[1];
    // POST /whip/:room and /whep/:room/:identity open a session; the rest reach an existing one.
    const creates = method === 'POST' && ((kind === 'whip' && inPath[2] === undefined) || (kind === 'whep' && path.split('/').length === 4));
    return { room, creates };
  }
  const field = path === '/video/rooms' ? 'name' : /^\/video\/(?:signal|ice|leave)$/.test(path) ? 'room_id' : undefined;
  if (field === undefined || method !== 'POST' || body === undefined) return undefined;
  try {
    const room = (JSON.parse(body.toString('utf8')) as Record<string, unknown> | null)?.[field];
    return typeof room === 'string' && room.length > 0 ? { room, creates: field === 'name' || path === '/video/signal' } : undefined;
  } catch {
    return undefined;
  }
}

async function relay(worker: MediaWorker, req: FastifyRequest, reply: FastifyReply, body: Buffer | undefined): Promise<FastifyReply> {
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_HEADERS.has(k)) continue;
    for (const value of Array.isArray(v) ? v : [v]) headers.append(k, value);
  }
  let res: Response;
  try {
    res = await fetch(worker.url(req.url), {
      method: req.method,
      headers,
      body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body,
      redirect: 'manual',
    });
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new AppError('MEDIA_UNAVAILABLE', 'the media worker for this room is not available; try again');
  }
  reply.status(res.status);
  for (const [k, v] of res.headers) if (!HOP_HEADERS.has(k)) reply.header(k, v);
  const length = res.headers.get('content-length');
  if (length !== null) reply.header('content-length', length);
  return reply.send(res.body === null ? undefined : Readable.fromWeb(res.body as WebReadableStream<Uint8Array>));
}

/**
 * Everything the edge does not answer itself goes to a media worker: by room where the
 * request names one, else to any. The room listing is merged from every worker.
 */
export function relayRoutes(app: FastifyInstance, deps: { pool: WorkerPool; tokens: TokenService; config: Config }): void {
  const { pool, tokens, config } = deps;

  app.get('/video/rooms', async (req) => {
    requireGrant(await authenticate(tokens, req), 'admin');
    const lists = await Promise.all(
      pool.workers().map(async (w) => {
        const res = await fetch(w.url('/video/rooms'), { headers: { authorization: req.headers.authorization ?? '' } }).catch(() => undefined);
        if (res?.ok !== true) return [];
        return ((await res.json()) as { rooms: unknown[] }).rooms;
      }),
    );
    return { rooms: lists.flat() };
  });

  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.limits.maxMessageBytes }, (_req, body, done) => done(null, body));
    scope.all('/*', async (req, reply) => {
      const body = Buffer.isBuffer(req.body) ? req.body : undefined;
      const route = routeOf(req.method, req.url.split('?')[0]!, body);
      const worker = route === undefined ? pool.leastLoaded() : route.creates ? pool.assign(route.room) : (pool.find(route.room) ?? pool.leastLoaded());
      return relay(worker, req, reply, body);
    });
  });
}
