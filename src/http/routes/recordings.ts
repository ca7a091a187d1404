import { createReadStream } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { type AccessToken, requireGrant, type TokenService } from '../../auth/tokens.ts';
import { AppError } from '../../common/errors.ts';
import type { RecordingManager } from '../../recording/recording-manager.ts';
import type { Sfu } from '../../sfu/sfu.ts';
import { authenticate } from '../auth.ts';

/** Admin or the record grant for that room. */
function requireRecordAccess(token: AccessToken, room: string): void {
  if (token.grants.has('admin')) return;
  requireGrant(token, 'record');
  if (token.room !== room) throw new AppError('FORBIDDEN', `token is not valid for room "${room}"`);
}

const CreateRoom = z.object({ name: z.string().min(1).max(128), e2ee: z.boolean().default(false) });

/** Room creation with a fixed mode, recording control, and finished recordings. */
export function recordingRoutes(app: FastifyInstance, deps: { sfu: Sfu; tokens: TokenService; recordings: RecordingManager }): void {
  const { sfu, tokens, recordings } = deps;

  app.post('/video/rooms', async (req, reply) => {
    requireGrant(await authenticate(tokens, req), 'admin');
    const body = CreateRoom.safeParse(req.body);
    if (!body.success) throw new AppError('VALIDATION_FAILED', body.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
    const existed = sfu.findRoom(body.data.name) !== undefined;
    const room = sfu.getOrCreateRoom(body.data.name, { e2ee: body.data.e2ee });
    reply.status(existed ? 200 : 201);
    return { name: room.name, sid: room.sid, e2ee: room.e2ee };
  });

  app.post<{ Params: { id: string } }>('/video/rooms/:id/recording', async (req, reply) => {
    requireRecordAccess(await authenticate(tokens, req), req.params.id);
    reply.status(201);
    return recordings.start(req.params.id);
  });

  app.delete<{ Params: { id: string } }>('/video/rooms/:id/recording', async (req) => {
    requireRecordAccess(await authenticate(tokens, req), req.params.id);
    return recordings.stop(req.params.id);
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
