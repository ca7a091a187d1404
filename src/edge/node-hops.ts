import type { IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../common/errors.ts';
import type { Cluster } from '../cluster/cluster.ts';
import { NODE_AUTH_HEADER } from '../cluster/node-auth.ts';
import type { NodeRecord } from '../cluster/node-registry.ts';
import type { Logger } from '../common/logger.ts';
import { RelayCounts } from './relay-counts.ts';
import type { WorkerPool } from './worker-pool.ts';

/** How long the check of a node a hop could not reach waits for a TCP connection. */
const PROBE_TIMEOUT_MS = 1000;
/** Rooms placed again after a hop found their node unreachable, per request (each time on a smaller view). */
export const MAX_REPLACEMENTS = 2;

/**
 * The edge's side of "any node answers" (issue 10, docs/cluster.md): where a request or a
 * join for a room goes when this node is in a cluster, and which requests were relayed
 * here by another node. Without a cluster every room is here and nothing is relayed.
 */
export class NodeHops {
  private readonly cluster: Cluster | undefined;
  private readonly pool: WorkerPool;
  /** Requests (HTTP and WebSocket upgrades) whose node credential checked out. */
  private readonly relayedHere = new WeakSet<IncomingMessage>();
  /** What the relay and the edge sessions carried node to node (the cluster gauges). */
  readonly counts = new RelayCounts();

  constructor(cluster: Cluster | undefined, pool: WorkerPool) {
    this.cluster = cluster;
    this.pool = pool;
  }

  /**
   * Checks the credential of every request that carries one, before its handler (and so
   * before a WebSocket upgrade) but after the per-IP rate limit has counted it: a bad one
   * is refused with CLUSTER_AUTH_FAILED, a good one marks the request as relayed. A node
   * outside a cluster ignores the header.
   */
  install(app: FastifyInstance, log: Logger): void {
    if (this.cluster === undefined) return;
    app.addHook('preValidation', async (req) => {
      if (req.headers[NODE_AUTH_HEADER] === undefined) return;
      try {
        this.check(req);
      } catch (err) {
        log.warn({ url: req.url, method: req.method, err: (err as Error).message }, 'node-to-node request refused');
        throw err;
      }
    });
  }

  /** For the per-IP rate limit, which runs first: a valid hop is exempt (its client was counted where it came in). */
  readonly rateExempt = (req: FastifyRequest): boolean => {
    if (this.cluster === undefined || req.headers[NODE_AUTH_HEADER] === undefined) return false;
    try {
      this.check(req);
      return true;
    } catch {
      return false;
    }
  };

  private check(req: FastifyRequest): void {
    if (this.relayedHere.has(req.raw)) return;
    const auth = this.cluster?.auth;
    if (auth === undefined) throw new AppError('CLUSTER_AUTH_FAILED', 'this node has not joined its cluster yet');
    auth.verify(req.headers[NODE_AUTH_HEADER], req.method, req.url);
    this.relayedHere.add(req.raw);
  }

  relayed(req: IncomingMessage): boolean {
    return this.relayedHere.has(req);
  }

  /** For a request that may create its room: undefined = here (placed and claimed), else the node to relay it to. */
  async place(room: string, relayed: boolean): Promise<NodeRecord | undefined> {
    if (this.cluster === undefined || this.pool.find(room) !== undefined) return undefined;
    return this.cluster.relayTarget(room, relayed);
  }

  /** For a request about a room it does not create: the node hosting it, if another. */
  async locate(room: string, relayed: boolean): Promise<NodeRecord | undefined> {
    if (this.cluster === undefined || relayed || this.pool.find(room) !== undefined) return undefined;
    return this.cluster.locate(room);
  }

  /** The other live nodes, for a request that names no room (recordings); none outside a cluster or for a relayed request. */
  others(relayed: boolean): NodeRecord[] {
    const cluster = this.cluster;
    if (cluster === undefined || relayed) return [];
    return cluster.nodes().filter((n) => n.id !== cluster.node);
  }

  /** This node's id in its cluster; undefined outside one. */
  get node(): string | undefined {
    return this.cluster?.node;
  }

  /**
   * A hop to `node` failed without an answer (connection refused, reset, unreachable, or a
   * WebSocket upgrade that failed). A fresh TCP connection tells a dead node from a stale
   * keep-alive socket or an HTTP error: if it fails too, the node is suspect (out of this
   * node's view, its claims stale, src/cluster/cluster.ts) and true is returned: place the
   * room again.
   */
  async unreachable(node: NodeRecord): Promise<boolean> {
    if (this.cluster === undefined) return false;
    if (await connects(node.url)) return false;
    this.cluster.suspect(node.id);
    return true;
  }

  /** The header of a hop to another node for this method and path (with its query). */
  credential(method: string, path: string): Record<string, string> {
    return { [NODE_AUTH_HEADER]: this.cluster!.auth!.sign(method, path) };
  }
}

/** Whether a TCP connection to the host and port of `url` opens within PROBE_TIMEOUT_MS. */
function connects(url: string): Promise<boolean> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  return new Promise((resolve) => {
    const socket = connect({ host: u.hostname.replace(/^\[|\]$/g, ''), port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => done(true));
  });
}
