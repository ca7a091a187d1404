import type { AccessToken, TokenService } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import { type ClientMessage, PROTOCOL_VERSION } from './messages.ts';

/**
 * What a `join` must pass before anything is created for it: our protocol version and a
 * valid token that names a room. The session checks it, and so does the edge, which
 * routes by that room.
 */
export async function verifyJoin(msg: Extract<ClientMessage, { type: 'join' }>, tokens: TokenService): Promise<AccessToken & { room: string }> {
  if (msg.protocol !== PROTOCOL_VERSION) {
    throw new AppError('UNSUPPORTED_PROTOCOL', `protocol ${msg.protocol} is not supported; this server speaks ${PROTOCOL_VERSION}`);
  }
  const token = await tokens.verify(msg.token);
  if (token.room === undefined) throw new AppError('FORBIDDEN', 'token does not name a room');
  return { ...token, room: token.room };
}
