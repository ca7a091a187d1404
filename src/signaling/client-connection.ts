import type { WebSocket } from 'ws';
import { toAppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { keepAlive } from './keepalive.ts';
import type { ServerMessage } from './messages.ts';
import { errorMessage, type RequestId } from './parse-message.ts';

/**
 * What every kind of signaling connection does with its client's socket: keepalive pings,
 * socket errors logged, server messages and errors sent in the one format. The session
 * (media in this process) and the edge session (media in a worker) build on it.
 */
export abstract class ClientConnection {
  protected readonly ws: WebSocket;
  /** Gains room and participant fields once they are known. */
  protected log: Logger;

  constructor(ws: WebSocket, log: Logger) {
    this.ws = ws;
    this.log = log;
    ws.on('error', (err) => this.log.debug({ err: err.message }, 'websocket error'));
    keepAlive(ws, () => this.log);
  }

  /** Sends one server message, if the socket is still open. */
  protected send(msg: ServerMessage): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Sends `err` as an `error` message (its code, or INTERNAL, which is logged: a bug). */
  protected sendError(id: RequestId, err: unknown): void {
    const e = toAppError(err);
    if (e.code === 'INTERNAL') this.log.error({ err }, 'signaling request failed');
    this.send(errorMessage(id, e));
  }
}
