import type { FastifyRequest } from 'fastify';
import { bearer, type AccessToken, type TokenService } from '../auth/tokens.ts';

/** The request's `Authorization: Bearer` token, verified. */
export function authenticate(tokens: TokenService, req: FastifyRequest): Promise<AccessToken> {
  return tokens.verify(bearer(req.headers.authorization));
}
