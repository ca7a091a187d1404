import { pino, type Logger } from 'pino';

export type { Logger };

/** One JSON line per event; children carry `room` and `participant` fields. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'secureconnect-video' } });
}
