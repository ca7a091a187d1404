import { createReadStream } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { type AccessToken, requireGrant, type TokenService } from '../../auth/tokens.ts';
import { AppError } from '../../common/errors.ts';
import { Name } from '../../common/limits.ts';
import type { RecordingManager } from '../../recording/recording-manager.ts';
import type { Sfu } from '../../sfu/sfu.ts';
import { authenticate } from '../auth.ts';
import { parse, pathName } from '../validate.ts';

/** Admin or the record grant for that room. */
function requireRecordAccess(token: AccessToken, room: string): void {
  if (token.grants.has('admin')) return;
  requireGrant(token, 'record');
  if (token.room !== room) throw new AppError('FORBIDDEN', `token is not valid for room "${room}"`);
}

/** POST /video/rooms; the edge checks it too, before it routes by name. */
export const CreateRoom = z.object({ name: Name, e2ee: z.boolean().default(false) });

/** Room creation with a fixed mode, recording control, and finished recordings. */
export function recordingRoutes(app: FastifyInstance, deps: { sfu: Sfu; tokens: TokenService; recordings: RecordingManager }): void {
  const { sfu, tokens, recordings } = deps;

  app.post('/video/rooms', async (req, reply) => {
    requireGrant(await authenticate(tokens, req), 'admin');
    const body = parse(CreateRoom, req.body);
    const existed = sfu.findRoom(body.name) !== undefined;
    const room = sfu.getOrCreateRoom(body.name, { e2ee: body.e2ee });
    reply.status(existed ? 200 : 201);
    return { name: room.name, sid: room.sid, e2ee: room.e2ee };
  });

  app.post<{ Params: { id: string } }>('/video/rooms/:id/recording', async (req, reply) => {
    const token = await authenticate(tokens, req);
    const room = pathName(req.params.id, 'room');
    requireRecordAccess(token, room);
    reply.status(201);
    return recordings.start(room);
  });

  app.delete<{ Params: { id: string } }>('/video/rooms/:id/recording', async (req) => {
    const token = await authenticate(tokens, req);
    const room = pathName(req.params.id, 'room');
    requireRecordAccess(token, room);
    return recordings.stop(room);
  });

  app.get('/video/recordings', async (req) => {
    const token = await authenticate(tokens, req);
    if (!token.grants.has('admin')) requireGrant(token, 'record');
    const all = await recordings.list();
    return { recordings: token.grants.has('admin') ? all : all.filter((r) => r.room === token.room) };
  });

  app.get<{ Params: { id: string } }>('/video/recordings/:id', async (req) => {
    const token = await authenticate(tokens, req);
    const meta = await recordings.get(req.params.id);
    requireRecordAccess(token, meta.room);
    return meta;
  });

  app.get<{ Params: { id: string; file: string } }>('/video/recordings/:id/files/:file', async (req, reply) => {
    const token = await authenticate(tokens, req);
    const meta = await recordings.get(req.params.id);
    requireRecordAccess(token, meta.room);
    const path = await recordings.filePath(req.params.id, req.params.file);
    reply.header('content-type', 'video/webm');
    reply.header('content-disposition', `attachment; filename="${req.params.file}"`);
    return reply.send(createReadStream(path));
  });
}
