import type { FastifyInstance } from 'fastify';
import { type SessionDeps, SignalingSession } from './session.ts';

export const SIGNALING_PATH = '/video/ws';

/** Mounts the WebSocket endpoint; returns the set of live sessions so shutdown can close them. */
export function signalingRoute(app: FastifyInstance, deps: SessionDeps): Set<SignalingSession> {
  const sessions = new Set<SignalingSession>();
  app.get(SIGNALING_PATH, { websocket: true }, (socket) => {
    const session = new SignalingSession(socket, deps);
    sessions.add(session);
    socket.on('close', () => sessions.delete(session));
  });
  return sessions;
}
