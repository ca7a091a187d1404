import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { AppError } from '../common/errors.ts';
import { type SessionDeps, SignalingSession } from './session.ts';

export const SIGNALING_PATH = '/video/ws';

/**
 * The WebSocket endpoint at SIGNALING_PATH, for the edge and a media process alike; a
 * plain HTTP request there (no upgrade) is UPGRADE_REQUIRED.
 */
export function signalingEndpoint(app: FastifyInstance, onSocket: (socket: WebSocket, req: FastifyRequest) => void): void {
  app.route({
    method: 'GET',
    url: SIGNALING_PATH,
    handler: async () => {
      throw new AppError('UPGRADE_REQUIRED', `${SIGNALING_PATH} is a WebSocket endpoint: send an Upgrade: websocket request`);
    },
    wsHandler: (socket, req) => onSocket(socket, req),
  });
}

/** Mounts the WebSocket endpoint; returns the set of live sessions so shutdown can close them. */
export function signalingRoute(app: FastifyInstance, deps: SessionDeps): Set<SignalingSession> {
  const sessions = new Set<SignalingSession>();
  signalingEndpoint(app, (socket) => {
    const session = new SignalingSession(socket, deps);
    sessions.add(session);
    socket.on('close', () => sessions.delete(session));
  });
  return sessions;
}
