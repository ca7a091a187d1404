import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { z } from 'zod';
import { AppError, validationError } from '../common/errors.ts';
import { DEFAULT_TOKEN_LIMITS, DisplayName, Name, type TokenLimits } from '../common/limits.ts';

export const GRANTS = ['publish', 'subscribe', 'admin', 'record'] as const;
export type Grant = (typeof GRANTS)[number];

/** Claims of an access token: iss (API key), sub (identity), exp (required), iat and nbf, and ours. */
const Claims = z.object({
  iss: z.string(),
  exp: z.number(),
  iat: z.number().optional(),
  sub: Name,
  /** Room the bearer may join; absent on admin-only tokens. */
  room: Name.optional(),
  name: DisplayName.optional(),
  grants: z.array(z.enum(GRANTS)).default([]),
  /** Room mode asked for: a room takes it from the token that creates it; others must match. */
  e2ee: z.boolean().optional(),
});

/** The names a minted token carries, checked as verify checks them. */
const MintNames = z.object({ identity: Claims.shape.sub, room: Claims.shape.room, name: Claims.shape.name });

export interface AccessToken {
  identity: string;
  room: string | undefined;
  name: string | undefined;
  grants: ReadonlySet<Grant>;
  e2ee: boolean | undefined;
}

export interface MintOptions {
  identity: string;
  room?: string;
  name?: string;
  grants?: readonly Grant[];
  ttlSeconds?: number;
  e2ee?: boolean;
}

export const DEFAULT_GRANTS: readonly Grant[] = ['publish', 'subscribe'];

/** Lifetime of a minted token when none is asked for (capped by the maximum lifetime). */
export const DEFAULT_TOKEN_TTL_SECONDS = 6 * 3600;

export class TokenService {
  private readonly key: Uint8Array;
  private readonly apiKey: string;
  readonly limits: TokenLimits;

  constructor(apiKey: string, apiSecret: string, limits: TokenLimits = DEFAULT_TOKEN_LIMITS) {
    this.apiKey = apiKey;
    this.key = new TextEncoder().encode(apiSecret);
    this.limits = limits;
  }

  /** Refuses (VALIDATION_FAILED) a lifetime or a name this service would not accept back. */
  async mint(opts: MintOptions): Promise<string> {
    const ttl = opts.ttlSeconds ?? Math.min(DEFAULT_TOKEN_TTL_SECONDS, this.limits.maxLifetimeSeconds);
    if (ttl > this.limits.maxLifetimeSeconds) {
      throw new AppError('VALIDATION_FAILED', `token lifetime ${ttl} s exceeds the maximum of ${this.limits.maxLifetimeSeconds} s`);
    }
    // A token names only what every route and the join accept back.
    const names = MintNames.safeParse({ identity: opts.identity, room: opts.room, name: opts.name });
    if (!names.success) throw validationError(names.error);
    const claims: Record<string, unknown> = { grants: [...(opts.grants ?? DEFAULT_GRANTS)] };
    if (opts.room !== undefined) claims.room = opts.room;
    if (opts.name !== undefined) claims.name = opts.name;
    if (opts.e2ee !== undefined) claims.e2ee = opts.e2ee;
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(this.apiKey)
      .setSubject(opts.identity)
      .setIssuedAt()
      .setExpirationTime(`${ttl}s`)
      .sign(this.key);
  }

  /**
   * Throws UNAUTHORIZED for a forged or malformed token, one without `exp` or with a
   * lifetime over the maximum; TOKEN_EXPIRED for an expired one; TOKEN_NOT_YET_VALID for
   * `nbf` or `iat` in the future, beyond the configured clock skew (`exp` gets none: a
   * token is never used past its expiry).
   */
  async verify(token: string | undefined): Promise<AccessToken> {
    if (token === undefined || token.length === 0) throw new AppError('UNAUTHORIZED', 'missing access token');
    if (token.length > 8192) throw new AppError('UNAUTHORIZED', 'access token too long');
    const { maxLifetimeSeconds: maxLifetime, clockSkewSeconds: skew } = this.limits;
    let payload: unknown;
    try {
      ({ payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'], issuer: this.apiKey, clockTolerance: skew, requiredClaims: ['exp'] }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new AppError('TOKEN_EXPIRED', 'access token expired');
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'exp') {
        throw new AppError('UNAUTHORIZED', 'access token has no valid "exp" claim: tokens must expire');
      }
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf') {
        throw new AppError('TOKEN_NOT_YET_VALID', 'access token is not valid yet ("nbf" is in the future; check the clocks)');
      }
      throw new AppError('UNAUTHORIZED', 'invalid access token');
    }
    const claims = Claims.safeParse(payload);
    if (!claims.success) throw new AppError('UNAUTHORIZED', 'access token claims are invalid');
    const c = claims.data;
    const now = Date.now() / 1000;
    if (c.exp <= now) throw new AppError('TOKEN_EXPIRED', 'access token expired');
    if (c.iat !== undefined && c.iat > now + skew) {
      throw new AppError('TOKEN_NOT_YET_VALID', 'access token is issued in the future ("iat"; check the clocks)');
    }
    if (c.exp - now > maxLifetime + skew || (c.iat !== undefined && c.exp - c.iat > maxLifetime)) {
      throw new AppError('UNAUTHORIZED', `access token lifetime exceeds the maximum of ${maxLifetime} s`);
    }
    return { identity: c.sub, room: c.room, name: c.name, grants: new Set(c.grants), e2ee: c.e2ee };
  }
}

export function requireGrant(token: AccessToken, grant: Grant): void {
  if (!token.grants.has(grant)) throw new AppError('FORBIDDEN', `token lacks the "${grant}" grant`);
}

/** The token must name this room, or carry the admin grant. */
export function requireRoom(token: AccessToken, room: string): void {
  if (token.room !== room && !token.grants.has('admin')) {
    throw new AppError('FORBIDDEN', `token is not valid for room "${room}"`);
  }
}

export function bearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  return m?.[1];
}
