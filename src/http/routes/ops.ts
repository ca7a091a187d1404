import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { GRANTS, requireGrant, type Grant, type TokenService } from '../../auth/tokens.ts';
import { AppError } from '../../common/errors.ts';
import { DisplayName, Name } from '../../common/limits.ts';
import type { Config } from '../../config.ts';
import type { Sfu } from '../../sfu/sfu.ts';
import { authenticate } from '../auth.ts';
import { at, ROUTES } from '../route-table.ts';
import { parse, pathName } from '../validate.ts';

/** Health, metrics and the admin room listing of a node whose media runs in its own process (never a cluster node). */
export function opsRoutes(app: FastifyInstance, deps: { sfu: Sfu; tokens: TokenService; metrics: Registry }): void {
  const { sfu, tokens, metrics } = deps;

  app.get('/healthz', async () => ({ status: 'ok', rooms: sfu.roomCount, participants: sfu.participantCount() }));

  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.contentType);
    return metrics.metrics();
  });

  app.get('/video/rooms', async (req) => {
    requireGrant(await authenticate(tokens, req), 'admin');
    return {
      rooms: sfu.listRooms().map((r) => ({ name: r.name, sid: r.sid, participants: r.size, tracks: r.tracks().length, createdAt: new Date(r.createdAt).toISOString() })),
    };
  });

  app.route<{ Params: { room: string } }>({
    ...at(ROUTES.room),
    handler: async (req) => {
      requireGrant(await authenticate(tokens, req), 'admin');
      const room = sfu.getRoom(pathName(req.params.room, 'room'));
      return {
        name: room.name,
        sid: room.sid,
        createdAt: new Date(room.createdAt).toISOString(),
        participants: room.all().map((p) => ({ ...p.info(), kind: p.joinedVia, joinedAt: new Date(p.joinedAt).toISOString() })),
      };
    },
  });
}

/** GET /dev/token: mints tokens while the random development key is in use. */
export function devTokenRoute(app: FastifyInstance, deps: { tokens: TokenService; config: Config }): void {
  const { tokens, config } = deps;
  const DevTokenQuery = z.object({
    room: Name,
    identity: Name,
    name: DisplayName.optional(),
    grants: z.string().optional(),
    /** `1`/`true`: the token's `e2ee` claim, so the room is (or must be) end-to-end encrypted; `0`/`false`: must not be. */
    e2ee: z.enum(['1', 'true', '0', 'false']).optional(),
  });
  // Only while the random development key is in use: with real keys tokens come from the operator.
  app.get('/dev/token', async (req) => {
    if (!config.auth.development) throw new AppError('NOT_FOUND', 'the development token endpoint is off when SCV_API_KEY is set');
    const q = parse(DevTokenQuery, req.query, 'query');
    const grants = (q.grants ?? 'publish,subscribe').split(',').filter((g) => g.length > 0);
    const bad = grants.find((g) => !(GRANTS as readonly string[]).includes(g));
    if (bad !== undefined) throw new AppError('VALIDATION_FAILED', `unknown grant "${bad}"`);
    const e2ee = q.e2ee === undefined ? undefined : q.e2ee === '1' || q.e2ee === 'true';
    return { token: await tokens.mint({ room: q.room, identity: q.identity, name: q.name, grants: grants as Grant[], e2ee }) };
  });
}
