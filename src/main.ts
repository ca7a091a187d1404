import { ConfigError, loadConfig } from './config.ts';
import { createLogger } from './common/logger.ts';
import { startEdge } from './edge/edge-service.ts';
import { startService } from './service.ts';

let config;
try {
  config = loadConfig(process.env, process.argv.slice(2));
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`secureconnect-video: ${err.message}\n`);
  process.exit(2);
}

const log = createLogger(config.logLevel);
// Media in worker processes behind the edge, or (SCV_MEDIA_WORKERS=0) in this one.
const service = config.mediaWorkers > 0 ? await startEdge(config, { log }) : await startService(config, { log });
if (config.auth.development) {
  log.warn(
    { apiKey: config.auth.apiKey, apiSecret: config.auth.apiSecret },
    'no SCV_API_KEY/SCV_API_SECRET set: using a random development key for this run; GET /dev/token mints tokens',
  );
}
log.info({ url: service.httpUrl, signaling: service.wsUrl, codecs: config.rtc.codecs, mediaWorkers: config.mediaWorkers }, 'SecureConnect Video listening');

/** A shutdown still running after this is forced (exit 1): something did not close, and the log says so. */
const SHUTDOWN_LIMIT_MS = 15_000;

let closing: Promise<void> | undefined;
const stop = () => {
  if (closing === undefined) {
    setTimeout(() => {
      log.error({ limitMs: SHUTDOWN_LIMIT_MS, open: process.getActiveResourcesInfo() }, 'shutdown did not finish in time: exiting with something still open');
      process.exit(1);
    }, SHUTDOWN_LIMIT_MS).unref();
  }
  closing ??= service.close().then(
    () => {
      log.info('stopped');
      process.exit(0);
    },
    (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    },
  );
};
// A cluster node drains first (its rooms move to other nodes, SCV_DRAIN_TIMEOUT at most); a second signal stops it at once.
const cluster = 'cluster' in service ? service.cluster : undefined;
let signalled = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (signalled || cluster === undefined) {
      log.info({ signal }, signalled ? 'second signal: shutting down now' : 'shutting down');
      signalled = true;
      return stop();
    }
    signalled = true;
    log.info({ signal, timeoutMs: config.drainTimeoutMs }, 'draining, then shutting down; a second signal shuts down now');
    cluster
      .drain(true)
      .then((drain) => drain.settled(config.drainTimeoutMs))
      .then(
        () => stop(),
        (err: unknown) => {
          log.error({ err }, 'drain failed: shutting down');
          stop();
        },
      );
  });
}
