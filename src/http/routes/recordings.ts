import { createReadStream } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { type AccessToken, requireGrant, type TokenService } from '../../auth/tokens.ts';
import { AppError } from '../../common/errors.ts';
import type { RecordingManager } from '../../recording/recording-manager.ts';
import type { Sfu } from '../../sfu/sfu.ts';
import { authenticate } from '../auth.ts';
import { at, CreateRoom, joinChecks, ROUTES } from '../route-table.ts';
import { parse, pathName } from '../validate.ts';

/** Admin or the record grant for that room. */
function requireRecordAccess(token: AccessToken, room: string): void {
  if (token.grants.has('admin')) return;
  requireGrant(token, 'record');
  if (token.room !== room) throw new AppError('FORBIDDEN', `token is not valid for room "${room}"`);
}

/** Room creation with a fixed mode, recording control, and finished recordings. */
export function recordingRoutes(app: FastifyInstance, deps: { sfu: Sfu; tokens: TokenService; recordings: RecordingManager }): void {
  const { sfu, tokens, recordings } = deps;

  app.route({
    ...at(ROUTES.createRoom),
    handler: async (req, reply) => {
      const token = await authenticate(tokens, req);
      joinChecks.createRoom(token);
      const body = parse(CreateRoom, req.body);
      const existed = sfu.findRoom(body.name) !== undefined;
      const room = sfu.getOrCreateRoom(body.name, { e2ee: body.e2ee });
      reply.status(existed ? 200 : 201);
      return { name: room.name, sid: room.sid, e2ee: room.e2ee };
    },
  });

  app.route<{ Params: { room: string } }>({
    ...at(ROUTES.startRecording),
    handler: async (req, reply) => {
      const token = await authenticate(tokens, req);
      const room = pathName(req.params.room, 'room');
      requireRecordAccess(token, room);
      reply.status(201);
      return recordings.start(room);
    },
  });

  app.route<{ Params: { room: string } }>({
    ...at(ROUTES.stopRecording),
    handler: async (req) => {
      const token = await authenticate(tokens, req);
      const room = pathName(req.params.room, 'room');
      requireRecordAccess(token, room);
      return recordings.stop(room);
    },
  });

  app.route({
    ...at(ROUTES.recordings),
    handler: async (req) => {
      const token = await authenticate(tokens, req);
      if (!token.grants.has('admin')) requireGrant(token, 'record');
      const all = await recordings.list();
      return { recordings: token.grants.has('admin') ? all : all.filter((r) => r.room === token.room) };
    },
  });

  app.route<{ Params: { id: string } }>({
    ...at(ROUTES.recording),
    handler: async (req) => {
      const token = await authenticate(tokens, req);
      const meta = await recordings.get(req.params.id);
      requireRecordAccess(token, meta.room);
      return meta;
    },
  });

  app.route<{ Params: { id: string; file: string } }>({
    ...at(ROUTES.recordingFile),
    handler: async (req, reply) => {
      const token = await authenticate(tokens, req);
      const meta = await recordings.get(req.params.id);
      requireRecordAccess(token, meta.room);
      const path = await recordings.filePath(req.params.id, req.params.file);
      reply.header('content-type', 'video/webm');
      reply.header('content-disposition', `attachment; filename="${req.params.file}"`);
      return reply.send(createReadStream(path));
    },
  });
}
