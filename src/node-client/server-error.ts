import type { ServerMessage } from '../signaling/messages.ts';

type ErrorReply = Extract<ServerMessage, { type: 'error' }>;

/** The server answered a request with `error`: its code and message, and the reply itself. */
export class ServerError extends Error {
  readonly code: string;
  readonly reply: ErrorReply;

  constructor(reply: ErrorReply) {
    super(`${reply.code}: ${reply.message}`);
    this.name = 'ServerError';
    this.code = reply.code;
    this.reply = reply;
  }
}
