import type { z } from 'zod';
import { clip, MAX_NAME_LENGTH } from './limits.ts';

/**
 * Errors are values with stable codes. Every code maps to one HTTP status here, and the
 * signaling layer sends the same code in its `error` messages, so clients see one vocabulary.
 */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  VALIDATION_FAILED: 400,
  MALFORMED_JSON: 400,
  MESSAGE_TOO_LARGE: 413,
  SDP_TOO_LARGE: 413,
  HEADERS_TOO_LARGE: 431,
  REQUEST_TIMEOUT: 408,
  UPGRADE_REQUIRED: 426,
  UNKNOWN_MESSAGE_TYPE: 400,
  UNSUPPORTED_PROTOCOL: 400,
  INVALID_SDP: 400,
  INVALID_CANDIDATE: 400,
  UNSUPPORTED_CODEC: 400,
  UNAUTHORIZED: 401,
  TOKEN_EXPIRED: 401,
  TOKEN_NOT_YET_VALID: 401,
  FORBIDDEN: 403,
  ROOM_NOT_FOUND: 404,
  PEER_NOT_FOUND: 404,
  TRACK_NOT_FOUND: 404,
  RECORDING_NOT_FOUND: 404,
  /** No live node of the cluster has that id (the drain routes). */
  NODE_NOT_FOUND: 404,
  NOT_FOUND: 404,
  ALREADY_JOINED: 409,
  NOT_JOINED: 409,
  CONFLICT: 409,
  E2EE_MODE_MISMATCH: 409,
  E2EE_RECORDING_FORBIDDEN: 409,
  /** Misdirected Request: the room is hosted by another cluster node; the message and details name it. */
  ROOM_ON_OTHER_NODE: 421,
  /** A node-to-node request (x-scv-node-auth) whose credential is missing, forged or expired. */
  CLUSTER_AUTH_FAILED: 401,
  JOIN_TIMEOUT: 408,
  ROOM_FULL: 429,
  TOO_MANY_PLAYERS: 429,
  RATE_LIMITED: 429,
  TOO_MANY_ROOMS: 503,
  UNSUPPORTED_MEDIA_TYPE: 415,
  SHUTTING_DOWN: 503,
  MEDIA_UNAVAILABLE: 503,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = 'AppError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }

  toJSON(): { code: ErrorCode; message: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/**
 * Anything thrown becomes an AppError. Framework errors that carry a 4xx status (bad
 * JSON or URL, oversized body or path segment, wrong content type) keep their meaning;
 * anything else is INTERNAL and keeps no detail. Framework messages may quote the
 * request, so they are clipped.
 */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  const code = (err as { code?: unknown } | null)?.code;
  const message = clip((err as Error | null)?.message ?? 'bad request');
  switch (status) {
    case 400:
      if (code === 'FST_ERR_BAD_URL') return new AppError('BAD_REQUEST', 'the URL has malformed percent-encoding');
      return /json/i.test(message) ? new AppError('MALFORMED_JSON', message) : new AppError('BAD_REQUEST', message);
    case 413:
      return new AppError('MESSAGE_TOO_LARGE', 'request body too large');
    case 414:
      // The router's limit on one path segment sits above any valid name (MAX_PATH_PARAM_LENGTH).
      return new AppError('VALIDATION_FAILED', `a path segment is longer than any valid name (${MAX_NAME_LENGTH} characters)`);
    case 415:
      return new AppError('UNSUPPORTED_MEDIA_TYPE', message);
    default:
      return new AppError('INTERNAL', 'internal error');
  }
}

/** The code a zod refinement names in its `params.code`, if it is one of ours. */
function namedCode(issue: z.ZodError['issues'][number]): ErrorCode | undefined {
  const code = issue.code === 'custom' ? (issue.params as { code?: unknown } | undefined)?.code : undefined;
  return typeof code === 'string' && code in ERROR_STATUS ? (code as ErrorCode) : undefined;
}

/**
 * A failed zod validation as VALIDATION_FAILED, or as the code a refinement names in its
 * `params.code` (the SDP size limit: SDP_TOO_LARGE). `firstOnly` reports one issue, the
 * first that names a code if any, so the message describes what the code says; `root`
 * names the whole input in the message.
 */
export function validationError(err: z.ZodError, opts: { firstOnly?: boolean; root?: string } = {}): AppError {
  const reported = err.issues.find((i) => namedCode(i) !== undefined) ?? err.issues[0];
  const issues = opts.firstOnly !== true ? err.issues : reported === undefined ? [] : [reported];
  const message = issues.map((i) => `${i.path.join('.') || (opts.root ?? 'body')}: ${i.message}`).join('; ') || 'invalid input';
  return new AppError(issues.map(namedCode).find((c) => c !== undefined) ?? 'VALIDATION_FAILED', message);
}

/** The one JSON shape of an error, over HTTP and in signaling messages alike. */
export function errorBody(err: AppError): { error: ReturnType<AppError['toJSON']> } {
  return { error: err.toJSON() };
}
