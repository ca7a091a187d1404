import type { WebSocket } from 'ws';
import type { Logger } from '../common/logger.ts';

/** WebSocket ping interval; a socket that misses two is dead. */
export const KEEPALIVE_INTERVAL_MS = 15_000;

/**
 * Pings the socket every interval and terminates it when a ping went unanswered, so a
 * client that vanished without a close frame is noticed. Stops by itself on close.
 */
export function keepAlive(ws: WebSocket, log: () => Logger): void {
  let alive = true;
  ws.on('pong', () => {
    alive = true;
  });
  const timer = setInterval(() => {
    if (!alive) {
      log().info('websocket missed keepalive, terminating');
      ws.terminate();
      return;
    }
    alive = false;
    ws.ping();
  }, KEEPALIVE_INTERVAL_MS);
  timer.unref();
  ws.once('close', () => clearInterval(timer));
}
