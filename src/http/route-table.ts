import type { HTTPMethods } from 'fastify';
import { z } from 'zod';
import { requireGrant, requireRoom, type AccessToken } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import { Name, Sdp } from '../common/limits.ts';
import { IceCandidateInit } from '../signaling/messages.ts';
import { SIGNALING_PATH } from '../signaling/ws-route.ts';

/**
 * The media process's routes under /video, /whip and /whep, declared once: the route
 * modules register their handlers at these methods and URLs, and the edge
 * (src/edge/http-relay.ts) relays exactly these, routed by the room each names and, for
 * one that may create its room, after the same token check. test/route-table.test.ts
 * fails when a media process registers a route that is neither here nor in EDGE_LOCAL.
 */

/** The seed API's bodies; the edge checks them too, before it routes by room_id. */
export const SignalBody = z.object({
  room_id: Name,
  peer_id: Name,
  /** An SDP string, or the seed's SessionDescription object `{type, sdp}`. */
  sdp: z.union([Sdp, z.object({ type: z.string().max(32), sdp: Sdp })]),
  type: z.string().max(32).optional(),
});

export const IceBody = z.object({
  room_id: Name,
  peer_id: Name,
  /** An RTCIceCandidateInit, a bare candidate line, or null / "" (end of candidates). */
  candidate: z.union([IceCandidateInit, z.string().max(1024)]).nullable(),
});

export const LeaveBody = z.object({ room_id: Name, peer_id: Name });

/** POST /video/rooms; the edge checks it too, before it routes by name. */
export const CreateRoom = z.object({ name: Name, e2ee: z.boolean().default(false) });

/**
 * What a token must allow to join a room by each route that can create one: checked by
 * the route before the join, and by the edge before it assigns the room to a worker.
 */
export const joinChecks = {
  signal(token: AccessToken, room: string): void {
    requireRoom(token, room);
    if (!token.grants.has('publish') && !token.grants.has('subscribe')) {
      throw new AppError('FORBIDDEN', 'token lacks the "publish" and "subscribe" grants');
    }
  },
  whip(token: AccessToken, room: string): void {
    requireRoom(token, room);
    requireGrant(token, 'publish');
  },
  whep(token: AccessToken, room: string): void {
    requireRoom(token, room);
    requireGrant(token, 'subscribe');
  },
  createRoom(token: AccessToken): void {
    requireGrant(token, 'admin');
  },
};

/**
 * Where a request names its room: the `:room` path parameter (any `:identity` beside it
 * is a name too), a field of its JSON body (with the route's own body schema), or
 * nowhere (any worker can answer it: recordings are on the disk they share).
 */
export type RoomKey = { in: 'path' } | { in: 'body'; schema: z.ZodType; field: string } | { in: 'none' };

export interface WorkerRoute {
  method: HTTPMethods;
  url: string;
  room: RoomKey;
  /**
   * The request may create its room: what the token must allow before the edge assigns
   * the room to a worker (the route checks it again). Others reach the room's worker if
   * it has one, else any.
   */
  creates?: (token: AccessToken, room: string) => void;
  /** Sends CORS headers; the URL answers CORS preflights (OPTIONS), with no token. */
  cors?: true;
}

const PATH: RoomKey = { in: 'path' };
const NONE: RoomKey = { in: 'none' };
const bodyField = (schema: z.ZodType, field: string): RoomKey => ({ in: 'body', schema, field });

export const ROUTES = {
  signal: { method: 'POST', url: '/video/signal', room: bodyField(SignalBody, 'room_id'), creates: joinChecks.signal },
  ice: { method: 'POST', url: '/video/ice', room: bodyField(IceBody, 'room_id') },
  leave: { method: 'POST', url: '/video/leave', room: bodyField(LeaveBody, 'room_id') },
  createRoom: { method: 'POST', url: '/video/rooms', room: bodyField(CreateRoom, 'name'), creates: joinChecks.createRoom },
  room: { method: 'GET', url: '/video/rooms/:room', room: PATH },
  startRecording: { method: 'POST', url: '/video/rooms/:room/recording', room: PATH },
  stopRecording: { method: 'DELETE', url: '/video/rooms/:room/recording', room: PATH },
  whip: { method: 'POST', url: '/whip/:room', room: PATH, creates: joinChecks.whip, cors: true },
  whipPatch: { method: 'PATCH', url: '/whip/:room/:sid', room: PATH, cors: true },
  whipDelete: { method: 'DELETE', url: '/whip/:room/:sid', room: PATH, cors: true },
  whep: { method: 'POST', url: '/whep/:room/:identity', room: PATH, creates: joinChecks.whep, cors: true },
  whepPatch: { method: 'PATCH', url: '/whep/:room/:identity/:sid', room: PATH, cors: true },
  whepDelete: { method: 'DELETE', url: '/whep/:room/:identity/:sid', room: PATH, cors: true },
  recordings: { method: 'GET', url: '/video/recordings', room: NONE },
  recording: { method: 'GET', url: '/video/recordings/:id', room: NONE },
  recordingFile: { method: 'GET', url: '/video/recordings/:id/files/:file', room: NONE },
} as const satisfies Record<string, WorkerRoute>;

/** A route's method and URL, to register its handler at. */
export function at(route: WorkerRoute): { method: HTTPMethods; url: string } {
  return { method: route.method, url: route.url };
}

/** Routes a media process has under the relayed prefixes that the edge answers itself, not by relaying. */
export const EDGE_LOCAL: readonly { method: HTTPMethods; url: string; why: string }[] = [
  { method: 'GET', url: '/video/rooms', why: "the edge merges every worker's list" },
  { method: 'GET', url: SIGNALING_PATH, why: "the edge's own WebSocket endpoint, which relays the socket to the room's worker" },
];

/** Each CORS URL with the methods its routes have, in table order: what its preflight allows. */
export function preflights(): { url: string; methods: HTTPMethods[] }[] {
  const byUrl = new Map<string, HTTPMethods[]>();
  for (const r of Object.values(ROUTES) as WorkerRoute[]) {
    if (r.cors !== true) continue;
    const methods = byUrl.get(r.url) ?? [];
    methods.push(r.method);
    byUrl.set(r.url, methods);
  }
  return [...byUrl].map(([url, methods]) => ({ url, methods }));
}
