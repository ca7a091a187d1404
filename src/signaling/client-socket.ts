import type { WebSocket } from 'ws';
import { toAppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { ServerMessage } from './messages.ts';
import { errorMessage, type RequestId } from './parse-message.ts';

/** Sends one server message, if the socket is still open. */
export function sendMessage(ws: WebSocket, msg: ServerMessage): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
}

/** Sends `err` as an `error` message (its code, or INTERNAL, which is logged: a bug). */
export function sendError(ws: WebSocket, log: Logger, id: RequestId, err: unknown): void {
  const e = toAppError(err);
  if (e.code === 'INTERNAL') log.error({ err }, 'signaling request failed');
  sendMessage(ws, errorMessage(id, e));
}
