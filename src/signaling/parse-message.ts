import { AppError, validationError } from '../common/errors.ts';
import { clip } from '../common/limits.ts';
import { CLIENT_MESSAGE_TYPES, ClientMessage } from './messages.ts';

export type RequestId = string | number | undefined;

export type ParsedMessage = { ok: true; msg: ClientMessage } | { ok: false; id: RequestId; error: AppError };

/**
 * Validates one WebSocket frame against the protocol. The signaling session and the edge
 * (which must answer a client before it knows the client's media worker) both use it, so
 * a bad frame gets the same error wherever it lands.
 */
export function parseClientMessage(data: Buffer, isBinary: boolean, maxBytes: number): ParsedMessage {
  const fail = (id: RequestId, error: AppError): ParsedMessage => ({ ok: false, id, error });
  if (isBinary) return fail(undefined, new AppError('BAD_REQUEST', 'binary frames are not part of the protocol; send JSON text'));
  if (data.length > maxBytes) return fail(undefined, new AppError('MESSAGE_TOO_LARGE', `messages are limited to ${maxBytes} bytes`));
  let json: unknown;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch {
    return fail(undefined, new AppError('MALFORMED_JSON', 'message is not valid JSON'));
  }
  const rawId = (json as { id?: unknown } | null)?.id;
  const id: RequestId = typeof rawId === 'string' || typeof rawId === 'number' ? rawId : undefined;
  const type = (json as { type?: unknown } | null)?.type;
  if (typeof json !== 'object' || json === null || Array.isArray(json) || typeof type !== 'string') {
    return fail(id, new AppError('VALIDATION_FAILED', 'message must be a JSON object with a string "type"'));
  }
  if (!CLIENT_MESSAGE_TYPES.includes(type)) return fail(id, new AppError('UNKNOWN_MESSAGE_TYPE', `unknown message type "${clip(type, 64)}"`));
  const parsed = ClientMessage.safeParse(json);
  if (!parsed.success) return fail(id, validationError(parsed.error, { firstOnly: true, root: '(message)' }));
  return { ok: true, msg: parsed.data };
}

/** The same error frame wherever it is sent from. */
export function errorMessage(id: RequestId, e: AppError): { type: 'error'; id?: string | number; code: string; message: string } {
  return id === undefined ? { type: 'error', code: e.code, message: e.message } : { type: 'error', id, code: e.code, message: e.message };
}
