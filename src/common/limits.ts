import { z } from 'zod';

/**
 * The limits on what a client sends that every entry point shares: token minting and
 * verification, the WebSocket join, every HTTP route at the edge and in a media process.
 * One value each, so a name valid in one place is valid in all (docs/http-api.md).
 */

/** Longest room name, identity or display name, in UTF-16 code units. */
export const MAX_NAME_LENGTH = 128;

/** A room name or an identity. */
export const Name = z.string().min(1).max(MAX_NAME_LENGTH);

/** A display name (may be empty). */
export const DisplayName = z.string().max(MAX_NAME_LENGTH);

/**
 * A name in a URL path is percent-encoded: one UTF-16 code unit takes at most 9
 * characters (`%E2%82%AC`). The router lets any valid name through; a longer segment
 * cannot be one.
 */
export const MAX_PATH_PARAM_LENGTH = MAX_NAME_LENGTH * 9;

/** Largest SDP (offer, answer or trickle fragment) accepted anywhere, in UTF-8 bytes. */
export const MAX_SDP_BYTES = 128 * 1024;

// The SDK shares these schemas (src/signaling/messages.ts): TextEncoder, not Buffer.
const utf8 = new TextEncoder();
const fitsSdpLimit = (s: string) => s.length <= MAX_SDP_BYTES && utf8.encode(s).byteLength <= MAX_SDP_BYTES;
const SDP_LIMIT = { message: `SDP is limited to ${MAX_SDP_BYTES} bytes`, params: { code: 'SDP_TOO_LARGE' } };

/** Any SDP a client sends; too large is SDP_TOO_LARGE (413), wherever it arrives. */
export const Sdp = z.string().min(1).refine(fitsSdpLimit, SDP_LIMIT);

/** The size check alone, for bodies whose emptiness another check reports. */
export const SdpSize = z.string().refine(fitsSdpLimit, SDP_LIMIT);

/** What a token's clock claims must satisfy (SCV_MAX_TOKEN_LIFETIME, SCV_TOKEN_CLOCK_SKEW). */
export interface TokenLimits {
  maxLifetimeSeconds: number;
  clockSkewSeconds: number;
}

/** The configuration's defaults, also used by tools that mint for a server whose settings they do not know. */
export const DEFAULT_TOKEN_LIMITS: TokenLimits = { maxLifetimeSeconds: 86400, clockSkewSeconds: 30 };

/** Longest client-supplied string written into a log line or echoed in an error message. */
export const MAX_LOGGED_CHARS = 160;

/** `s` cut to MAX_LOGGED_CHARS (marked with an ellipsis), for logs and error messages. */
export function clip(s: string, max = MAX_LOGGED_CHARS): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}
