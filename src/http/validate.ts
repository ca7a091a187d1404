import type { FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { validationError } from '../common/errors.ts';
import { Name } from '../common/limits.ts';

/** `value` checked against `schema`, or the coded error (VALIDATION_FAILED, or the code a check names). */
export function parse<T extends z.ZodType>(schema: T, value: unknown, root = 'body'): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw validationError(r.error, { root });
  return r.data;
}

/** A room name or identity from a URL path: the same limit as everywhere (src/common/limits.ts). */
export function pathName(value: string, what: string): string {
  return parse(Name, value, what);
}

/** The request's media type (Content-Type without parameters), lower-cased; '' without one. */
export function mediaTypeOf(req: FastifyRequest): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}
