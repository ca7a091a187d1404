import { AggregatorRegistry, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { TokenService } from '../auth/tokens.ts';
import { createLogger, type Logger } from '../common/logger.ts';
import type { Config } from '../config.ts';
import { createHttpApp, listen } from '../http/app.ts';
import { devTokenRoute } from '../http/routes/ops.ts';
import { webRoutes } from '../http/routes/web.ts';
import { signalingEndpoint } from '../signaling/ws-route.ts';
import { EdgeSession } from './edge-session.ts';
import { relayRoutes } from './http-relay.ts';
import { WorkerPool } from './worker-pool.ts';

export interface EdgeService {
  httpUrl: string;
  wsUrl: string;
  config: Config;
  tokens: TokenService;
  pool: WorkerPool;
  log: Logger;
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
  const app = await createHttpApp(config, log);

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

  app.get('/healthz', async (_req, reply) => {
    const workers = pool.slotStates();
    const serving = workers.filter((w) => w.state === 'ready');
    if (serving.length === 0) reply.status(503);
    return {
      status: serving.length === workers.length ? 'ok' : serving.length > 0 ? 'degraded' : 'unavailable',
      rooms: serving.reduce((n, w) => n + w.rooms, 0),
      participants: serving.reduce((n, w) => n + w.participants, 0),
      workers,
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
  relayRoutes(app, { pool, tokens, config });
  const sessions = new Set<EdgeSession>();
  signalingEndpoint(app, (socket) => {
    const session = new EdgeSession(socket, { pool, tokens, config, log });
    sessions.add(session);
    socket.on('close', () => sessions.delete(session));
  });
  await webRoutes(app, { log });

  let urls: { httpUrl: string; wsUrl: string };
  try {
    urls = await listen(app, config);
  } catch (err) {
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
    close() {
      closing ??= (async () => {
        // Workers first: their sessions tell each client why (`left`, server_shutdown) through the relay.
        await pool.close();
        for (const s of sessions) s.close();
        await app.close();
      })();
      return closing;
    },
  };
}
