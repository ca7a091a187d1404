import type { FastifyInstance, FastifyRequest } from 'fastify';
import { requireGrant, type TokenService } from '../auth/tokens.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { AppError } from '../common/errors.ts';
import { authenticate } from '../http/auth.ts';
import type { NodeHops } from './node-hops.ts';
import type { WorkerPool } from './worker-pool.ts';

/** How long the listing waits for each worker and each other node: one that does not answer in time is named, not waited for. */
export const LISTING_TIMEOUT_MS = 1000;

const ROOMS_PATH = '/video/rooms';

/**
 * One view of the cluster (issue 10, item 7), served by the edge: `GET /video/rooms` lists
 * the rooms of this node's workers and, in a cluster, of every other live node (asked over
 * HTTP with the node credential; a request that arrives so answers with its own node's
 * rooms only, so nothing fans out twice), each room with its `node`; `GET /video/nodes` is
 * the live view of the registry. Both need an admin token, checked here and by every node
 * asked.
 */
export function clusterRoutes(app: FastifyInstance, deps: { pool: WorkerPool; tokens: TokenService; cluster: Cluster | undefined; hops: NodeHops }): void {
  const { pool, tokens, cluster, hops } = deps;

  /** This node's rooms, from its workers (each answers for its own). */
  const ownRooms = async (req: FastifyRequest): Promise<object[]> => {
    const lists = await Promise.all(
      pool.workers().map((w) => listRooms(w.url(ROOMS_PATH), { authorization: req.headers.authorization ?? '' })),
    );
    const rooms = lists.flatMap((l) => l ?? []);
    return cluster === undefined ? rooms : rooms.map((r) => ({ ...r, node: cluster.node }));
  };

  app.get(ROOMS_PATH, async (req) => {
    requireGrant(await authenticate(tokens, req), 'admin');
    if (cluster === undefined || hops.relayed(req.raw)) return { rooms: await ownRooms(req) };
    const others = cluster.nodes().filter((n) => n.id !== cluster.node);
    const [own, ...theirs] = await Promise.all([
      ownRooms(req),
      ...others.map((n) => listRooms(`${n.url}${ROOMS_PATH}`, { authorization: req.headers.authorization ?? '', ...hops.credential('GET', ROOMS_PATH) })),
    ]);
    const unreachable = others.filter((_, i) => theirs[i] === undefined).map((n) => n.id);
    return { rooms: [...own!, ...theirs.flatMap((l) => l ?? [])], unreachable };
  });

  app.get('/video/nodes', async (req) => {
    requireGrant(await authenticate(tokens, req), 'admin');
    if (cluster === undefined) throw new AppError('NOT_FOUND', 'this node is not in a cluster (SCV_REDIS_URL is unset)');
    return {
      node: cluster.node,
      nodes: cluster
        .nodes()
        .map(({ id, url, media, draining, load, startedAt }) => ({ id, url, media, draining, load, startedAt: new Date(startedAt).toISOString() }))
        .sort((a, b) => a.id.localeCompare(b.id)),
    };
  });
}

/** The `rooms` of a listing at `url`. */
const listRooms = (url: string, headers: Record<string, string>) => fetchListing(url, 'rooms', headers);

/** The array `field` of a listing at `url`, or undefined if it did not answer 200 with one within LISTING_TIMEOUT_MS. */
export async function fetchListing(url: string, field: string, headers: Record<string, string>): Promise<object[] | undefined> {
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(LISTING_TIMEOUT_MS) });
    if (!res.ok) return undefined;
    return await listOf(res, field);
  } catch {
    return undefined;
  }
}

/** The array `field` of a JSON listing answer, or undefined. */
export async function listOf(res: Response, field: string): Promise<object[] | undefined> {
  const list = ((await res.json()) as Record<string, unknown>)[field];
  return Array.isArray(list) ? (list as object[]) : undefined;
}
