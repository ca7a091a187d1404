import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { TokenService } from '../auth/tokens.ts';
import { Cluster } from '../cluster/cluster.ts';
import { createLogger, type Logger } from '../common/logger.ts';
import type { Config } from '../config.ts';
import { createHttpApp, listen } from '../http/app.ts';
import { devTokenRoute } from '../http/routes/ops.ts';
import { webRoutes } from '../http/routes/web.ts';
import { signalingEndpoint } from '../signaling/ws-route.ts';
import { clusterMetrics } from './cluster-metrics.ts';
import { clusterRoutes } from './cluster-routes.ts';
import { drainRoutes } from './drain-routes.ts';
import { EdgeSession } from './edge-session.ts';
import { relayRoutes } from './http-relay.ts';
import { NodeHops } from './node-hops.ts';
import { PoolRooms } from './pool-rooms.ts';
import { WorkerPool } from './worker-pool.ts';

export interface EdgeService {
  httpUrl: string;
  wsUrl: string;
  config: Config;
  tokens: TokenService;
  pool: WorkerPool;
  log: Logger;
  /** This node in the cluster; undefined without SCV_REDIS_URL. */
  cluster: Cluster | undefined;
  /** Idempotent: stops the workers (their rooms close, clients are told), then every connection. */
  close(): Promise<void>;
}

/**
 * The signaling edge in front of the media workers (SCV_MEDIA_WORKERS > 0): serves the
 * call page, development tokens, health and the merged metrics itself, and relays
 * signaling and HTTP to the worker each room lives in (src/edge/worker-pool.ts).
 */
export async function startEdge(config: Config, opts: { log?: Logger } = {}): Promise<EdgeService> {
  const log = opts.log ?? createLogger(config.logLevel);
  const tokens = new TokenService(config.auth.apiKey, config.auth.apiSecret, config.auth.tokenLimits);
  const pool = await WorkerPool.start(config, log);
  // The edge is the cluster node: its workers never see Redis (src/media-worker/main.ts).
  const cluster = config.cluster === undefined ? undefined : new Cluster(config, new PoolRooms(pool), log, tokens);
  // Where a room no worker has goes, and which requests other nodes relayed here (nothing without a cluster).
  const hops = new NodeHops(cluster, pool);
  const app = await createHttpApp(config, log, { rateExempt: hops.rateExempt });
  hops.install(app, log);

  const own = new Registry();
  collectDefaultMetrics({ register: own, prefix: 'scv_edge_process_' });
  new Gauge({
    name: 'scv_media_workers',
    help: 'Media worker processes serving',
    registers: [own],
    collect() {
      this.set(pool.workers().length);
    },
  });
  new Gauge({
    name: 'scv_media_worker_restarts',
    help: 'Media workers started again after one died, since the edge started',
    registers: [own],
    collect() {
      this.set(pool.restarts);
    },
  });

  if (cluster !== undefined) clusterMetrics(own, cluster, pool, hops.counts);
  if (cluster !== undefined) {
    const suspected = new Counter({ name: 'scv_cluster_suspected_nodes_total', help: 'Nodes a relay from here could not connect to, taken out of this node\'s view until they wrote a heartbeat', registers: [own] });
    cluster.on('nodeSuspected', () => suspected.inc());
  }
  if (cluster !== undefined) {
    const merged = new Counter({ name: 'scv_cluster_rooms_merged_total', help: 'Rooms hosted twice (placed on two nodes while Redis was away) whose twin here moved into the other', registers: [own] });
    cluster.on('roomMerged', () => merged.inc());
  }

  // Liveness: the workers' state only; the cluster's (Redis included) is reported, never a failure.
  app.get('/healthz', async (_req, reply) => {
    const workers = pool.slotStates();
    const serving = workers.filter((w) => w.state === 'ready');
    if (serving.length === 0) reply.status(503);
    return {
      status: serving.length === workers.length ? 'ok' : serving.length > 0 ? 'degraded' : 'unavailable',
      rooms: serving.reduce((n, w) => n + w.rooms, 0),
      participants: serving.reduce((n, w) => n + w.participants, 0),
      workers,
      ...(cluster === undefined ? {} : { cluster: cluster.health() }),
    };
  });

  app.get('/metrics', async (_req, reply) => {
    const perWorker = await Promise.all(pool.workers().map((w) => w.metrics()));
    // Counters and gauges add up across workers; prom-client knows how for its own process metrics.
    const merged = Registry.merge([AggregatorRegistry.aggregate(perWorker.filter((m) => m.length > 0)), own]);
    reply.header('content-type', merged.contentType);
    return merged.metrics();
  });

  devTokenRoute(app, { tokens, config });
  clusterRoutes(app, { pool, tokens, cluster, hops });
  drainRoutes(app, { tokens, cluster, hops });
  relayRoutes(app, { pool, tokens, config, hops });
  const sessions = new Set<EdgeSession>();
  signalingEndpoint(app, (socket, req) => {
    const session = new EdgeSession(socket, { pool, tokens, config, log, hops, relayed: hops.relayed(req.raw) });
    sessions.add(session);
    socket.on('close', () => sessions.delete(session));
  });
  cluster?.countJoining(() => [...sessions].filter((s) => s.settling).length);
  await webRoutes(app, { log });

  let urls: { httpUrl: string; wsUrl: string };
  try {
    urls = await listen(app, config);
    await cluster?.start(urls.httpUrl);
  } catch (err) {
    await cluster?.close();
    await pool.close();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    ...urls,
    config,
    tokens,
    pool,
    log,
    cluster,
    close() {
      closing ??= (async () => {
        const started = Date.now();
        // Workers first: their sessions tell each client why (`left`, server_shutdown) through the relay.
        await pool.close();
        log.info({ ms: Date.now() - started }, 'shutdown: media workers stopped');
        // After the workers: what is still held is released, then the node leaves the registry.
        if (cluster !== undefined) {
          await cluster.close();
          log.info({ ms: Date.now() - started }, 'shutdown: left the cluster');
        }
        for (const s of sessions) s.close();
        await app.close();
        log.info({ ms: Date.now() - started }, 'shutdown: connections closed');
      })();
      return closing;
    },
  };
}
