import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { iceServersFor } from '../../auth/ice-servers.ts';
import { requireGrant, requireRoom, type AccessToken, type Grant, type TokenService } from '../../auth/tokens.ts';
import { AppError } from '../../common/errors.ts';
import { clip, Name, Sdp, SdpSize } from '../../common/limits.ts';
import type { Config } from '../../config.ts';
import type { Participant } from '../../sfu/participant.ts';
import type { PublishedTrack } from '../../sfu/published-track.ts';
import type { Room } from '../../sfu/room.ts';
import { assertPlausibleSdp, CANDIDATE_LINE, firstUfrag, receives, sends, type MediaSection } from '../../sfu/sdp.ts';
import type { Sfu } from '../../sfu/sfu.ts';
import type { ParticipantCapabilities } from '../../sfu/signals.ts';
import { IceCandidateInit } from '../../signaling/messages.ts';
import { authenticate } from '../auth.ts';
import { mediaTypeOf, parse } from '../validate.ts';

/**
 * Media over plain HTTP, one PeerConnection per session, negotiated by a single offer/answer
 * (no server-initiated renegotiation: docs/http-api.md):
 *
 * - the seed API: POST /video/signal, /video/ice, /video/leave (JSON);
 * - WHIP (RFC 9725): POST /whip/:room publishes into a room as a participant;
 * - WHEP: POST /whep/:room/:identity plays one participant's audio and video.
 *
 * WHIP/WHEP sessions are HTTP resources (Location), trickled with PATCH
 * (application/trickle-ice-sdpfrag) and ended with DELETE, by the token identity that made
 * them (or an admin). Those routes send CORS headers and answer preflights.
 */

const SDP_TYPE = 'application/sdp';
const SDPFRAG_TYPE = 'application/trickle-ice-sdpfrag';
/** The bodies of the seed API; the edge checks them too, before it routes by room_id. */
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
};

/** Path parameters that name a room or an identity: the same limit as everywhere (src/common/limits.ts). */
const RoomParams = z.object({ room: Name });
const WhepParams = z.object({ room: Name, identity: Name });

const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'Location, ETag, Link, Accept-Post, Accept-Patch',
};
const CORS_ALLOW_HEADERS = 'Authorization, Content-Type, If-Match';
const CORS_MAX_AGE = '86400';

type ResourceKind = 'whip' | 'whep';

/** One connection negotiated once by the client's offer; nothing new reaches it later. */
const HTTP_PARTICIPANT: ParticipantCapabilities = { renegotiates: false, hidden: false, receives: { from: 'all' }, resumable: false };
const WHIP_PARTICIPANT: ParticipantCapabilities = { renegotiates: false, hidden: false, receives: { from: 'none' }, resumable: false };
/** A WHEP player: hidden, it receives one participant's tracks and ends when that participant leaves. */
function whepPlayer(identity: string): ParticipantCapabilities {
  return { renegotiates: false, hidden: true, receives: { from: 'participant', identity }, resumable: false };
}

/** A live WHIP or WHEP session, by participant sid. */
interface Resource {
  kind: ResourceKind;
  room: string;
  participant: Participant;
  /** Token identity that created it: only it (or an admin) may PATCH or DELETE it. */
  owner: string;
  /** WHEP: identity of the participant being played. */
  target?: string;
  /** ICE username fragment of the client's offer: a PATCH with another one is an ICE restart. */
  ufrag: string | undefined;
  etag: string;
}

function requireContentType(req: FastifyRequest, type: string): string {
  const got = mediaTypeOf(req);
  if (got !== type) {
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', `Content-Type must be ${type}${got === '' ? '' : `, not ${clip(got, 64)}`}`);
  }
  if (typeof req.body !== 'string') throw new AppError('BAD_REQUEST', 'request body is missing');
  // An offer or a trickle fragment: the one SDP size limit.
  return parse(SdpSize, req.body);
}

/** A bearer may act for `peerId` if it is the token's identity, or with the admin grant. */
function requireSelf(token: AccessToken, peerId: string): void {
  if (token.identity !== peerId && !token.grants.has('admin')) {
    throw new AppError('FORBIDDEN', `token identity "${token.identity}" may not act for peer "${peerId}"`);
  }
}

function quote(v: string): string {
  return `"${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

/** RFC 9725 §4.6: one `Link: <uri>; rel="ice-server"` per STUN/TURN URL, credentials as attributes. */
function iceServerLinks(config: Config, identity: string): string[] {
  const links: string[] = [];
  for (const s of iceServersFor(config.ice, identity)) {
    for (const url of s.urls) {
      let link = `<${url}>; rel="ice-server"`;
      if (s.username !== undefined && s.credential !== undefined) {
        link += `; username=${quote(s.username)}; credential=${quote(s.credential)}; credential-type="password"`;
      }
      links.push(link);
    }
  }
  return links;
}

function candidateInit(c: z.infer<typeof IceBody>['candidate']): IceCandidateInit | null {
  if (c === null) return null;
  if (typeof c === 'string') return c === '' ? null : { candidate: c, sdpMid: null, sdpMLineIndex: 0 };
  // Every m-line shares one transport (max-bundle): without a locator, the first one is meant.
  if ((c.sdpMid === undefined || c.sdpMid === null) && (c.sdpMLineIndex === undefined || c.sdpMLineIndex === null)) {
    return { ...c, sdpMLineIndex: 0 };
  }
  return c;
}

/** What a `application/trickle-ice-sdpfrag` body (RFC 8840) carries that we act on. */
interface SdpFrag {
  ufrag: string | undefined;
  pwd: string | undefined;
  candidates: string[];
  endOfCandidates: boolean;
}

function parseSdpFrag(body: string): SdpFrag {
  const frag: SdpFrag = { ufrag: undefined, pwd: undefined, candidates: [], endOfCandidates: false };
  for (const raw of body.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('a=ice-ufrag:')) frag.ufrag = line.slice(12);
    else if (line.startsWith('a=ice-pwd:')) frag.pwd = line.slice(10);
    else if (line === 'a=end-of-candidates') frag.endOfCandidates = true;
    else if (line.startsWith('a=candidate:')) {
      if (!CANDIDATE_LINE.test(line)) throw new AppError('INVALID_CANDIDATE', `not a valid candidate line: ${line.slice(0, 120)}`);
      frag.candidates.push(line.slice(2));
    } else if (!/^[a-z]=/.test(line)) {
      throw new AppError('BAD_REQUEST', `not an SDP fragment line: ${line.slice(0, 120)}`);
    }
    // m=, a=mid:, a=ice-options: and anything else are allowed and ignored: one bundled transport.
  }
  return frag;
}

function audioVideo(sections: MediaSection[]): MediaSection[] {
  return sections.filter((s) => (s.kind === 'audio' || s.kind === 'video') && !s.stopped);
}

export function mediaRoutes(app: FastifyInstance, deps: { sfu: Sfu; tokens: TokenService; config: Config }): void {
  const { sfu, tokens, config } = deps;
  const resources = new Map<string, Resource>();

  /**
   * Joins `identity` to `room` and negotiates its one PeerConnection; on any failure the
   * participant is closed again, so a refused offer leaves nothing behind.
   */
  async function joinAndAnswer(
    room: string,
    opts: { identity: string; name: string; token: AccessToken; grants: AccessToken['grants']; capabilities: ParticipantCapabilities; joinedVia: string; owner?: string },
    sdp: string,
  ): Promise<{ participant: Participant; answer: string }> {
    // An HTTP session cannot be told it was replaced: a second one for the same identity is refused.
    const joined = sfu.join(room, {
      identity: opts.identity,
      name: opts.name,
      grants: opts.grants,
      capabilities: opts.capabilities,
      joinedVia: opts.joinedVia,
      e2ee: opts.token.e2ee,
      owner: opts.owner,
      ifPresent: 'refuse',
    });
    const participant = joined.participant;
    try {
      const answer = await participant.handleCombinedOffer(sdp, joined.room.tracksFor(participant));
      return { participant, answer };
    } catch (err) {
      participant.close('connection_failed');
      throw err;
    }
  }

  function addResource(r: Resource): void {
    resources.set(r.participant.sid, r);
    r.participant.once('closed', () => resources.delete(r.participant.sid));
  }

  /** The live session `sid` of this kind in `room`, or PEER_NOT_FOUND; then the ownership check. */
  function resourceFor(token: AccessToken, kind: ResourceKind, room: string, sid: string, target?: string): Resource {
    if (target === undefined) parse(RoomParams, { room });
    else parse(WhepParams, { room, identity: target });
    requireRoom(token, room);
    const r = resources.get(sid);
    if (r === undefined || r.kind !== kind || r.room !== room || r.participant.closed || (target !== undefined && r.target !== target)) {
      throw new AppError('PEER_NOT_FOUND', `no ${kind.toUpperCase()} session "${clip(sid, 64)}" in room "${room}"`);
    }
    if (r.owner !== token.identity && !token.grants.has('admin')) {
      throw new AppError('FORBIDDEN', `session "${sid}" belongs to another identity`);
    }
    return r;
  }

  function sendCreated(reply: FastifyReply, r: Resource, location: string, answer: string, identity: string): FastifyReply {
    reply.status(201).header('content-type', SDP_TYPE).header('location', location).header('etag', r.etag);
    const links = iceServerLinks(config, identity);
    if (links.length > 0) reply.header('link', links);
    return reply.send(answer);
  }

  async function patchResource(req: FastifyRequest, r: Resource): Promise<void> {
    const frag = parseSdpFrag(requireContentType(req, SDPFRAG_TYPE));
    const ifMatch = req.headers['if-match'];
    const restart = ifMatch === '*' || (frag.ufrag !== undefined && frag.ufrag !== r.ufrag);
    if (restart) {
      // RFC 9725 lets a session refuse an ICE restart, as long as the current ICE session is kept.
      throw new AppError('BAD_REQUEST', 'ICE restarts are not supported: DELETE this session and POST a new offer');
    }
    for (const candidate of frag.candidates) {
      try {
        await r.participant.addCandidate('publisher', { candidate, sdpMid: null, sdpMLineIndex: 0, usernameFragment: frag.ufrag ?? null });
      } catch (err) {
        // RFC 9725 §4.3.1: a candidate the session cannot use is discarded, the rest still apply.
        if (!(err instanceof AppError) || err.code !== 'INVALID_CANDIDATE') throw err;
        r.participant.log.debug({ candidate: clip(candidate), err: err.message }, 'trickled candidate discarded');
      }
    }
    if (frag.endOfCandidates) await r.participant.addCandidate('publisher', null);
  }

  // Scoped so the SDP parsers and CORS hooks apply to these routes only.
  void app.register(async (scope) => {
    scope.addContentTypeParser([SDP_TYPE, SDPFRAG_TYPE], { parseAs: 'string', bodyLimit: config.limits.maxMessageBytes }, (_req, body, done) => {
      done(null, body);
    });

    // ---- the seed API ------------------------------------------------------------------

    scope.post('/video/signal', async (req) => {
      const token = await authenticate(tokens, req);
      const body = parse(SignalBody, req.body);
      const sdp = typeof body.sdp === 'string' ? body.sdp : body.sdp.sdp;
      const types = [body.type, typeof body.sdp === 'string' ? undefined : body.sdp.type].filter((t) => t !== undefined);
      if (types.length === 0) throw new AppError('VALIDATION_FAILED', 'type: required ("offer")');
      if (types.some((t) => t !== 'offer')) {
        throw new AppError('VALIDATION_FAILED', `type: only "offer" is accepted (the server answers), got "${types.find((t) => t !== 'offer')}"`);
      }
      joinChecks.signal(token, body.room_id);
      requireSelf(token, body.peer_id);
      const { participant, answer } = await joinAndAnswer(
        body.room_id,
        { identity: body.peer_id, name: token.name ?? body.peer_id, token, grants: token.grants, capabilities: HTTP_PARTICIPANT, joinedVia: 'http' },
        sdp,
      );
      return { sdp: { type: 'answer', sdp: answer }, peer_id: participant.identity, participant_sid: participant.sid };
    });

    /** The seed API's participant `peerId` in `roomId` (only HTTP sessions are reachable here). */
    const httpPeer = (roomId: string, peerId: string): Participant => {
      const p = sfu.getRoom(roomId).byIdentity(peerId);
      if (p === undefined || p.joinedVia !== 'http' || p.closed) throw new AppError('PEER_NOT_FOUND', `no HTTP session for peer "${peerId}" in room "${roomId}"`);
      return p;
    };

    scope.post('/video/ice', async (req) => {
      const token = await authenticate(tokens, req);
      const body = parse(IceBody, req.body);
      requireRoom(token, body.room_id);
      requireSelf(token, body.peer_id);
      await httpPeer(body.room_id, body.peer_id).addCandidate('publisher', candidateInit(body.candidate));
      return { status: 'ok' };
    });

    scope.post('/video/leave', async (req) => {
      const token = await authenticate(tokens, req);
      const body = parse(LeaveBody, req.body);
      requireRoom(token, body.room_id);
      requireSelf(token, body.peer_id);
      httpPeer(body.room_id, body.peer_id).close('client_left');
      return { status: 'ok' };
    });

    // ---- WHIP / WHEP -------------------------------------------------------------------

    const cors = async (_req: FastifyRequest, reply: FastifyReply) => {
      reply.headers(CORS_HEADERS);
    };
    const preflight = (methods: string, extra: Record<string, string>) => async (_req: FastifyRequest, reply: FastifyReply) => {
      reply
        .status(204)
        .headers(CORS_HEADERS)
        .headers({
          'access-control-allow-methods': methods,
          'access-control-allow-headers': CORS_ALLOW_HEADERS,
          'access-control-max-age': CORS_MAX_AGE,
          ...extra,
        });
      return reply.send();
    };

    scope.options('/whip/:room', preflight('POST, OPTIONS', { 'accept-post': SDP_TYPE }));
    scope.options('/whip/:room/:sid', preflight('PATCH, DELETE, OPTIONS', { 'accept-patch': SDPFRAG_TYPE }));
    scope.options('/whep/:room/:identity', preflight('POST, OPTIONS', { 'accept-post': SDP_TYPE }));
    scope.options('/whep/:room/:identity/:sid', preflight('PATCH, DELETE, OPTIONS', { 'accept-patch': SDPFRAG_TYPE }));

    scope.post<{ Params: { room: string } }>('/whip/:room', { onRequest: cors }, async (req, reply) => {
      const token = await authenticate(tokens, req);
      const offer = requireContentType(req, SDP_TYPE);
      const { room } = parse(RoomParams, req.params);
      joinChecks.whip(token, room);
      const sections = audioVideo(assertPlausibleSdp(offer));
      if (!sections.some((s) => sends(s.direction))) throw new AppError('INVALID_SDP', 'a WHIP offer must send at least one audio or video track');
      const { participant, answer } = await joinAndAnswer(
        room,
        { identity: token.identity, name: token.name ?? token.identity, token, grants: token.grants, capabilities: WHIP_PARTICIPANT, joinedVia: 'whip' },
        offer,
      );
      const r: Resource = { kind: 'whip', room, participant, owner: token.identity, ufrag: firstUfrag(offer), etag: `"${participant.sid}"` };
      addResource(r);
      return sendCreated(reply, r, `/whip/${encodeURIComponent(room)}/${participant.sid}`, answer, token.identity);
    });

    scope.patch<{ Params: { room: string; sid: string } }>('/whip/:room/:sid', { onRequest: cors }, async (req, reply) => {
      const token = await authenticate(tokens, req);
      await patchResource(req, resourceFor(token, 'whip', req.params.room, req.params.sid));
      return reply.status(204).send();
    });

    scope.delete<{ Params: { room: string; sid: string } }>('/whip/:room/:sid', { onRequest: cors }, async (req, reply) => {
      const token = await authenticate(tokens, req);
      resourceFor(token, 'whip', req.params.room, req.params.sid).participant.close('client_left');
      return reply.status(200).send();
    });

    scope.post<{ Params: { room: string; identity: string } }>('/whep/:room/:identity', { onRequest: cors }, async (req, reply) => {
      const token = await authenticate(tokens, req);
      const offer = requireContentType(req, SDP_TYPE);
      const { room: roomName, identity } = parse(WhepParams, req.params);
      joinChecks.whep(token, roomName);
      const sections = audioVideo(assertPlausibleSdp(offer));
      if (sections.some((s) => sends(s.direction))) throw new AppError('INVALID_SDP', 'a WHEP offer must only receive (a=recvonly)');
      if (!sections.some((s) => receives(s.direction))) throw new AppError('INVALID_SDP', 'a WHEP offer must receive audio or video');
      const target = sfu.getRoom(roomName).byIdentity(identity);
      if (target === undefined || target.hidden || target.closed) throw new AppError('PEER_NOT_FOUND', `no participant "${identity}" in room "${roomName}"`);
      if (target.published.size === 0) throw new AppError('CONFLICT', `"${identity}" publishes nothing yet; try again once it does`);
      const { participant, answer } = await joinAndAnswer(
        roomName,
        // The player's own identity may be in the room already (a viewer of their own call).
        {
          identity: `whep-${randomBytes(6).toString('hex')}`,
          name: token.name ?? token.identity,
          token,
          grants: new Set<Grant>(['subscribe']),
          capabilities: whepPlayer(identity),
          joinedVia: 'whep',
          owner: token.identity,
        },
        offer,
      );
      // The room ends a player with the participant it plays; that one may have left while we negotiated.
      if (target.closed) {
        participant.close('client_left');
        throw new AppError('PEER_NOT_FOUND', `"${identity}" left room "${roomName}"`);
      }
      const r: Resource = { kind: 'whep', room: roomName, participant, owner: token.identity, target: identity, ufrag: firstUfrag(offer), etag: `"${participant.sid}"` };
      addResource(r);
      return sendCreated(reply, r, `/whep/${encodeURIComponent(roomName)}/${encodeURIComponent(identity)}/${participant.sid}`, answer, token.identity);
    });

    scope.patch<{ Params: { room: string; identity: string; sid: string } }>('/whep/:room/:identity/:sid', { onRequest: cors }, async (req, reply) => {
      const token = await authenticate(tokens, req);
      await patchResource(req, resourceFor(token, 'whep', req.params.room, req.params.sid, req.params.identity));
      return reply.status(204).send();
    });

    scope.delete<{ Params: { room: string; identity: string; sid: string } }>('/whep/:room/:identity/:sid', { onRequest: cors }, async (req, reply) => {
      const token = await authenticate(tokens, req);
      resourceFor(token, 'whep', req.params.room, req.params.sid, req.params.identity).participant.close('client_left');
      return reply.status(200).send();
    });
  });
}
