import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TokenService } from '../auth/tokens.ts';
import { NODE_AUTH_HEADER } from '../cluster/node-auth.ts';
import type { NodeRecord } from '../cluster/node-registry.ts';
import { AppError } from '../common/errors.ts';
import type { Config } from '../config.ts';
import { authenticate } from '../http/auth.ts';
import { preflights, ROUTES, type WorkerRoute } from '../http/route-table.ts';
import { mediaTypeOf, parse, pathName } from '../http/validate.ts';
import type { MediaWorker } from './media-worker.ts';
import { fetchListing, listOf } from './cluster-routes.ts';
import { MAX_REPLACEMENTS, type NodeHops } from './node-hops.ts';
import type { WorkerPool } from './worker-pool.ts';

/** Hop-by-hop headers (RFC 9110 §7.6.1), those the relay recomputes, and the node credential (one hop's). */
const HOP_HEADERS = new Set([NODE_AUTH_HEADER, 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'te', 'trailer', 'proxy-connection']);

/** A JSON body the route routes by, parsed: its syntax is checked before the token, as a worker's body parser does. */
function jsonBody(route: WorkerRoute, req: FastifyRequest, body: Buffer | undefined): { json: unknown } | undefined {
  if (route.room.in !== 'body' || body === undefined || mediaTypeOf(req) !== 'application/json') return undefined;
  try {
    return { json: JSON.parse(body.toString('utf8')) };
  } catch {
    throw new AppError('MALFORMED_JSON', 'request body is not valid JSON');
  }
}

/**
 * The room a request names, checked as the worker checks it once the token has passed:
 * the names' length, the body's shape. Undefined when the request names none the edge
 * can read (the worker then answers it, as it would anyway).
 */
function roomOf(route: WorkerRoute, req: FastifyRequest, body: { json: unknown } | undefined): string | undefined {
  const key = route.room;
  if (key.in === 'path') {
    const params = req.params as Record<string, string>;
    if (params.identity !== undefined) pathName(params.identity, 'identity');
    return pathName(params.room!, 'room');
  }
  if (key.in === 'none' || body === undefined) return undefined;
  return (parse(key.schema, body.json) as Record<string, string>)[key.field];
}

/** Where a request goes: a media worker of this node, or another node of the cluster (with the hop's credential). */
type Target = { worker: MediaWorker } | { node: NodeRecord; credential: Record<string, string> };

/** The one relay of the edge: to a worker, or node to node; the answer comes back as it was. */
async function relay(target: Target, req: FastifyRequest, reply: FastifyReply, body: Buffer | undefined): Promise<FastifyReply> {
  const res = await send(target, req, body);
  if (res === undefined) throw unavailable(target);
  return answer(res, reply);
}

/**
 * Relays to the node `find` names; if it turns out unreachable (it is then suspect, and
 * its claim stale) `find` is asked again, on a view without it. False: the room is here
 * after all. (Not the reply itself: a FastifyReply is thenable, so awaiting it would wait
 * for the response to finish and yield undefined, and the request would be handled here too.)
 */
async function relayToNode(
  find: () => Promise<NodeRecord | undefined>,
  hops: NodeHops,
  req: FastifyRequest,
  reply: FastifyReply,
  body: Buffer | undefined,
): Promise<boolean> {
  for (let attempt = 0; ; attempt++) {
    const node = await find();
    if (node === undefined) return false;
    const target = { node, credential: hops.credential(req.method, req.url) };
    hops.counts.requests.out++;
    const res = await send(target, req, body);
    if (res !== undefined) {
      answer(res, reply);
      return true;
    }
    // No answer, and a fresh connection fails too: whatever the node did is gone with it, so doing it elsewhere does it once.
    if (attempt === MAX_REPLACEMENTS || !(await hops.unreachable(node))) throw unavailable(target);
  }
}

/**
 * GET /video/recordings in a cluster: this node's list (a worker checks the token's grants
 * and filters by its room), then every other node's, asked with the same token and the node
 * credential, each recording once (nodes on one machine may share the folder) with its
 * `node`. Nodes that did not answer are named in `unreachable`.
 */
async function mergeRecordings(worker: MediaWorker, hops: NodeHops, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const own = await send({ worker }, req, undefined);
  if (own === undefined) throw unavailable({ worker });
  if (!own.ok) return answer(own, reply);
  const others = hops.others(false);
  const [mine, ...theirs] = await Promise.all([
    listOf(own, 'recordings'),
    ...others.map((n) => fetchListing(`${n.url}${req.url}`, 'recordings', { authorization: req.headers.authorization ?? '', ...hops.credential('GET', req.url) })),
  ]);
  const byId = new Map<string, object>();
  const lists: [string, object[] | undefined][] = [[hops.node!, mine], ...others.map((n, i): [string, object[] | undefined] => [n.id, theirs[i]])];
  for (const [node, list] of lists) {
    for (const rec of list ?? []) {
      const id = (rec as { id?: unknown }).id;
      if (typeof id === 'string' && !byId.has(id)) byId.set(id, { ...rec, node });
    }
  }
  // Newest first, as one node lists them.
  const recordings = [...byId.values()].sort((a, b) => startOf(b).localeCompare(startOf(a)));
  return reply.send({ recordings, unreachable: others.filter((_, i) => theirs[i] === undefined).map((n) => n.id) });
}

const startOf = (rec: object): string => String((rec as { startedAt?: unknown }).startedAt ?? '');

/**
 * A recording (or one of its files) by id in a cluster: here if this node has it, else on
 * the first other node that does (asked one after another with the node credential); the
 * answer comes back as that node gave it, and a recording no node has is this node's 404.
 */
async function findRecording(worker: MediaWorker, hops: NodeHops, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const own = await send({ worker }, req, undefined);
  if (own === undefined) throw unavailable({ worker });
  if (own.status !== 404) return answer(own, reply);
  for (const node of hops.others(false)) {
    hops.counts.requests.out++;
    const res = await send({ node, credential: hops.credential(req.method, req.url) }, req, undefined);
    if (res !== undefined && res.status !== 404) {
      await own.body?.cancel();
      return answer(res, reply);
    }
    await res?.body?.cancel();
  }
  return answer(own, reply);
}

function unavailable(target: Target): AppError {
  return new AppError(
    'MEDIA_UNAVAILABLE',
    'worker' in target ? 'the media worker for this room is not available; try again' : `node "${target.node.id}" hosting this room is not answering; try again`,
  );
}

/** The request as it came, to the target; undefined if no answer came (no connection, or it broke). */
async function send(target: Target, req: FastifyRequest, body: Buffer | undefined): Promise<Response | undefined> {
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_HEADERS.has(k)) continue;
    for (const value of Array.isArray(v) ? v : [v]) headers.append(k, value);
  }
  if ('node' in target) for (const [k, v] of Object.entries(target.credential)) headers.set(k, v);
  try {
    return await fetch('worker' in target ? target.worker.url(req.url) : `${target.node.url}${req.url}`, {
      method: req.method,
      headers,
      body: req.method === 'GET' || req.method === 'HEAD' ? undefined : body,
      redirect: 'manual',
    });
  } catch {
    return undefined;
  }
}

function answer(res: Response, reply: FastifyReply): FastifyReply {
  reply.status(res.status);
  for (const [k, v] of res.headers) if (!HOP_HEADERS.has(k)) reply.header(k, v);
  const length = res.headers.get('content-length');
  if (length !== null) reply.header('content-length', length);
  return reply.send(res.body === null ? undefined : Readable.fromWeb(res.body as WebReadableStream<Uint8Array>));
}

/**
 * The worker routes (src/http/route-table.ts), relayed: by room where the request names
 * one, else to any worker. The edge's router has the same routes as a worker's, so an
 * unknown path or method, a bad URL or an overlong path segment gets the same answer at
 * the edge without reaching a worker. Nothing is assigned, relayed or logged for a
 * request before its token checks out. In a cluster, a request for a room another node
 * hosts (or is placed on) is relayed to that node instead, with the hop's credential
 * (counted in `hops.counts`). The room listing is src/edge/cluster-routes.ts's.
 */
export function relayRoutes(
  app: FastifyInstance,
  deps: { pool: WorkerPool; tokens: TokenService; config: Config; hops: NodeHops },
): void {
  const { pool, tokens, config, hops } = deps;

  void app.register(async (scope) => {
    // Bodies go to the worker as they came, within the same size limit.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.limits.maxMessageBytes }, (_req, body, done) => done(null, body));
    // CORS preflights carry no token: any worker answers them, nothing is created.
    for (const { url } of preflights()) scope.options(url, (req, reply) => relay({ worker: pool.leastLoaded() }, req, reply, undefined));
    for (const route of Object.values(ROUTES) as WorkerRoute[]) {
      scope.route({
        method: route.method,
        url: route.url,
        handler: async (req, reply) => {
          const body = Buffer.isBuffer(req.body) ? req.body : undefined;
          const json = jsonBody(route, req, body);
          const token = await authenticate(tokens, req);
          const room = roomOf(route, req, json);
          // Relayed here by another node: this node hosts the room, and the request goes no further than its workers.
          const relayed = hops.relayed(req.raw);
          if (relayed) hops.counts.requests.in++;
          let worker: MediaWorker;
          if (room === undefined && hops.others(relayed).length > 0 && route.url.startsWith(ROUTES.recordings.url)) {
            return route === ROUTES.recordings ? mergeRecordings(pool.leastLoaded(), hops, req, reply) : findRecording(pool.leastLoaded(), hops, req, reply);
          }
          if (room === undefined) worker = pool.leastLoaded();
          else if (route.creates !== undefined) {
            route.creates(token, room);
            if (await relayToNode(() => hops.place(room, relayed), hops, req, reply, body)) return reply;
            worker = pool.assign(room);
          } else {
            if (await relayToNode(() => hops.locate(room, relayed), hops, req, reply, body)) return reply;
            worker = pool.find(room) ?? pool.leastLoaded();
          }
          return relay({ worker }, req, reply, body);
        },
      });
    }
  });
}
