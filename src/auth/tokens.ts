import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { z } from 'zod';
import { AppError } from '../common/errors.ts';

export const GRANTS = ['publish', 'subscribe', 'admin', 'record'] as const;
export type Grant = (typeof GRANTS)[number];

/** Claims of an access token, besides iss (API key), sub (identity), iat and exp. */
const Claims = z.object({
  iss: z.string(),
  sub: z.string().min(1).max(128),
  /** Room the bearer may join; absent on admin-only tokens. */
  room: z.string().min(1).max(128).optional(),
  name: z.string().max(128).optional(),
  grants: z.array(z.enum(GRANTS)).default([]),
  /** Room mode asked for: a room takes it from the token that creates it; others must match. */
  e2ee: z.boolean().optional(),
});

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

export class TokenService {
  private readonly key: Uint8Array;
  private readonly apiKey: string;

  constructor(apiKey: string, apiSecret: string) {
    this.apiKey = apiKey;
    this.key = new TextEncoder().encode(apiSecret);
  }

  async mint(opts: MintOptions): Promise<string> {
    const claims: Record<string, unknown> = { grants: [...(opts.grants ?? DEFAULT_GRANTS)] };
    if (opts.room !== undefined) claims.room = opts.room;
    if (opts.name !== undefined) claims.name = opts.name;
    if (opts.e2ee !== undefined) claims.e2ee = opts.e2ee;
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(this.apiKey)
      .setSubject(opts.identity)
      .setIssuedAt()
      .setExpirationTime(`${opts.ttlSeconds ?? 6 * 3600}s`)
      .sign(this.key);
  }

  /** Throws UNAUTHORIZED for a forged or malformed token and TOKEN_EXPIRED for an expired one. */
  async verify(token: string | undefined): Promise<AccessToken> {
    if (token === undefined || token.length === 0) throw new AppError('UNAUTHORIZED', 'missing access token');
    if (token.length > 8192) throw new AppError('UNAUTHORIZED', 'access token too long');
    let payload: unknown;
    try {
      ({ payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'], issuer: this.apiKey }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new AppError('TOKEN_EXPIRED', 'access token expired');
      throw new AppError('UNAUTHORIZED', 'invalid access token');
    }
    const claims = Claims.safeParse(payload);
    if (!claims.success) throw new AppError('UNAUTHORIZED', 'access token claims are invalid');
    const c = claims.data;
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
