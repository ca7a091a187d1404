/**
 * A media worker process, forked by the edge (src/edge/media-worker.ts): a whole node
 * (src/service.ts) on a loopback HTTP port, serving the rooms the edge sends it. It
 * reports its load over IPC and exits when told to stop or when the edge goes away.
 */
import { createLogger } from '../common/logger.ts';
import { startService, type Service } from '../service.ts';
import { performance } from 'node:perf_hooks';
import { type EdgeToWorker, LOAD_REFRESH_MS, LOAD_REPORT_INTERVAL_MS, type WorkerToEdge } from './ipc.ts';

const send = (msg: WorkerToEdge) => {
  // The edge may die between the check and the write (kill -9): the callback takes the EPIPE, and 'disconnect' stops us.
  if (process.connected) process.send!(msg, undefined, undefined, () => {});
};

let service: Service | undefined;
let stopping = false;

async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  await service?.close();
  process.exit(code);
}

async function start(msg: Extract<EdgeToWorker, { type: 'start' }>): Promise<void> {
  const config = {
    ...msg.config,
    http: { host: '127.0.0.1', port: 0 },
    rtc: { ...msg.config.rtc, portRange: msg.portRange },
    mediaWorkers: 0,
    // The node is the edge; a worker is never a cluster node of its own.
    cluster: undefined,
  };
  const log = createLogger(config.logLevel).child({ worker: msg.index });
  service = await startService(config, { log, web: false });
  const sfu = service.sfu;
  let last = '';
  let lastSentAt = 0;
  let lastElu = performance.eventLoopUtilization();
  setInterval(() => {
    const load = {
      rooms: sfu.listRooms().map((r) => r.name),
      participants: sfu.participantCount(),
      tracks: sfu.publishedTrackCount(),
      shedding: sfu.overload.shedRatio > 0,
    };
    const key = JSON.stringify(load);
    const now = Date.now();
    if (key === last && now - lastSentAt < LOAD_REFRESH_MS) return;
    last = key;
    lastSentAt = now;
    const elu = performance.eventLoopUtilization();
    const utilization = Math.round(performance.eventLoopUtilization(elu, lastElu).utilization * 1000) / 1000;
    lastElu = elu;
    send({ type: 'load', ...load, packetsForwarded: sfu.stats.packetsForwarded, utilization });
  }, LOAD_REPORT_INTERVAL_MS).unref();
  send({ type: 'ready', httpUrl: service.httpUrl, wsUrl: service.wsUrl });
  log.info({ url: service.httpUrl }, 'media worker ready');
}

process.on('message', (msg: EdgeToWorker) => {
  switch (msg.type) {
    case 'start':
      start(msg).catch((err: unknown) => {
        process.stderr.write(`media worker ${msg.index} failed to start: ${(err as Error).stack ?? String(err)}\n`);
        process.exit(1);
      });
      return;
    case 'metrics':
      service?.metrics.getMetricsAsJSON().then((metrics) => send({ type: 'metrics', id: msg.id, metrics }));
      return;
    case 'closeRoom':
      service?.sfu.findRoom(msg.room)?.close(msg.reason);
      return;
    case 'stop':
      void stop(0);
      return;
  }
});
// The edge is gone (crashed or killed): nobody can reach our rooms any more.
process.on('disconnect', () => void stop(0));
// A signal to the whole process group (Ctrl-C, systemd's stop) is the edge's to act on: it
// may drain first (a cluster node) and then stops us; alone, without an edge, we stop.
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void (process.connected ? undefined : stop(0)));
