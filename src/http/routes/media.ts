import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import { z } from 'zod';
import { iceServersFor } from '../../auth/ice-servers.ts';
import { requireRoom, type AccessToken, type TokenService } from '../../auth/tokens.ts';
import { AppError } from '../../common/errors.ts';
import { clip, Name, SdpSize } from '../../common/limits.ts';
import type { Config } from '../../config.ts';
import { assertPlausibleSdp, receives, sends, type MediaSection } from '../../sfu/sdp.ts';
import type { Sfu } from '../../sfu/sfu.ts';
import type { IceCandidateInit } from '../../signaling/messages.ts';
import { authenticate } from '../auth.ts';
import { HttpSessions, type HttpSession } from '../http-sessions.ts';
import { at, IceBody, joinChecks, LeaveBody, preflights, ROUTES, SignalBody } from '../route-table.ts';
import { parseSdpFrag, SDPFRAG_TYPE } from '../sdp-frag.ts';
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
 * them (or an admin). Those routes send CORS headers and answer preflights. The sessions
 * themselves are kept by HttpSessions; these routes translate HTTP to it and back.
 */

const SDP_TYPE = 'application/sdp';

/** Path parameters that name a room or an identity: the same limit as everywhere (src/common/limits.ts). */
const RoomParams = z.object({ room: Name });
const WhepParams = z.object({ room: Name, identity: Name });

const CORS_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'Location, ETag, Link, Accept-Post, Accept-Patch',
};
const CORS_ALLOW_HEADERS = 'Authorization, Content-Type, If-Match';
const CORS_MAX_AGE = '86400';

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

function audioVideo(sections: MediaSection[]): MediaSection[] {
  return sections.filter((s) => (s.kind === 'audio' || s.kind === 'video') && !s.stopped);
}

/** What a preflight on a URL with these methods answers besides the CORS headers. */
function preflightHeaders(methods: readonly HTTPMethods[]): Record<string, string> {
  return {
    'access-control-allow-methods': [...methods, 'OPTIONS'].join(', '),
    'access-control-allow-headers': CORS_ALLOW_HEADERS,
    'access-control-max-age': CORS_MAX_AGE,
    ...(methods.includes('POST') ? { 'accept-post': SDP_TYPE } : {}),
    ...(methods.includes('PATCH') ? { 'accept-patch': SDPFRAG_TYPE } : {}),
  };
}

export function mediaRoutes(app: FastifyInstance, deps: { sfu: Sfu; tokens: TokenService; config: Config }): void {
  const { sfu, tokens, config } = deps;
  const sessions = new HttpSessions(sfu);
  app.addHook('onClose', async () => sessions.close());

  /** The live WHIP/WHEP session the URL names, for this token: the names' limits, the room, then HttpSessions' lookup. */
  function resourceFor(token: AccessToken, kind: 'whip' | 'whep', room: string, sid: string, target?: string): HttpSession {
    if (target === undefined) parse(RoomParams, { room });
    else parse(WhepParams, { room, identity: target });
    requireRoom(token, room);
    return sessions.resource(token, kind, room, sid, target);
  }

  function sendCreated(reply: FastifyReply, s: HttpSession, location: string, answer: string, identity: string): FastifyReply {
    reply.status(201).header('content-type', SDP_TYPE).header('location', location).header('etag', s.etag);
    const links = iceServerLinks(config, identity);
    if (links.length > 0) reply.header('link', links);
    return reply.send(answer);
  }

  async function patch(req: FastifyRequest, s: HttpSession): Promise<void> {
    const frag = parseSdpFrag(requireContentType(req, SDPFRAG_TYPE));
    await sessions.trickle(s, frag, req.headers['if-match'] === '*');
  }

  // Scoped so the SDP parsers and CORS hooks apply to these routes only.
  void app.register(async (scope) => {
    scope.addContentTypeParser([SDP_TYPE, SDPFRAG_TYPE], { parseAs: 'string', bodyLimit: config.limits.maxMessageBytes }, (_req, body, done) => {
      done(null, body);
    });

    // ---- the seed API ------------------------------------------------------------------

    scope.route({
      ...at(ROUTES.signal),
      handler: async (req) => {
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
        const { session, answer } = await sessions.openSeed(body.room_id, body.peer_id, token, sdp);
        return { sdp: { type: 'answer', sdp: answer }, peer_id: session.participant.identity, participant_sid: session.participant.sid };
      },
    });

    scope.route({
      ...at(ROUTES.ice),
      handler: async (req) => {
        const token = await authenticate(tokens, req);
        const body = parse(IceBody, req.body);
        requireRoom(token, body.room_id);
        requireSelf(token, body.peer_id);
        await sessions.seedSession(token, body.room_id, body.peer_id).participant.addCandidate('publisher', candidateInit(body.candidate));
        return { status: 'ok' };
      },
    });

    scope.route({
      ...at(ROUTES.leave),
      handler: async (req) => {
        const token = await authenticate(tokens, req);
        const body = parse(LeaveBody, req.body);
        requireRoom(token, body.room_id);
        requireSelf(token, body.peer_id);
        sessions.seedSession(token, body.room_id, body.peer_id).participant.close('client_left');
        return { status: 'ok' };
      },
    });

    // ---- WHIP / WHEP -------------------------------------------------------------------

    const cors = async (_req: FastifyRequest, reply: FastifyReply) => {
      reply.headers(CORS_HEADERS);
    };
    for (const { url, methods } of preflights()) {
      const headers = preflightHeaders(methods);
      scope.options(url, async (_req, reply) => reply.status(204).headers(CORS_HEADERS).headers(headers).send());
    }

    scope.route<{ Params: { room: string } }>({
      ...at(ROUTES.whip),
      onRequest: cors,
      handler: async (req, reply) => {
        const token = await authenticate(tokens, req);
        const offer = requireContentType(req, SDP_TYPE);
        const { room } = parse(RoomParams, req.params);
        joinChecks.whip(token, room);
        const sections = audioVideo(assertPlausibleSdp(offer, config.rtc.maxMediaSections));
        if (!sections.some((s) => sends(s.direction))) throw new AppError('INVALID_SDP', 'a WHIP offer must send at least one audio or video track');
        const { session, answer } = await sessions.openWhip(room, token, offer);
        return sendCreated(reply, session, `/whip/${encodeURIComponent(room)}/${session.participant.sid}`, answer, token.identity);
      },
    });

    scope.route<{ Params: { room: string; sid: string } }>({
      ...at(ROUTES.whipPatch),
      onRequest: cors,
      handler: async (req, reply) => {
        const token = await authenticate(tokens, req);
        await patch(req, resourceFor(token, 'whip', req.params.room, req.params.sid));
        return reply.status(204).send();
      },
    });

    scope.route<{ Params: { room: string; sid: string } }>({
      ...at(ROUTES.whipDelete),
      onRequest: cors,
      handler: async (req, reply) => {
        const token = await authenticate(tokens, req);
        resourceFor(token, 'whip', req.params.room, req.params.sid).participant.close('client_left');
        return reply.status(200).send();
      },
    });

    scope.route<{ Params: { room: string; identity: string } }>({
      ...at(ROUTES.whep),
      onRequest: cors,
      handler: async (req, reply) => {
        const token = await authenticate(tokens, req);
        const offer = requireContentType(req, SDP_TYPE);
        const { room, identity } = parse(WhepParams, req.params);
        joinChecks.whep(token, room);
        const sections = audioVideo(assertPlausibleSdp(offer, config.rtc.maxMediaSections));
        if (sections.some((s) => sends(s.direction))) throw new AppError('INVALID_SDP', 'a WHEP offer must only receive (a=recvonly)');
        if (!sections.some((s) => receives(s.direction))) throw new AppError('INVALID_SDP', 'a WHEP offer must receive audio or video');
        const { session, answer } = await sessions.openWhep(room, identity, token, offer);
        return sendCreated(reply, session, `/whep/${encodeURIComponent(room)}/${encodeURIComponent(identity)}/${session.participant.sid}`, answer, token.identity);
      },
    });

    scope.route<{ Params: { room: string; identity: string; sid: string } }>({
      ...at(ROUTES.whepPatch),
      onRequest: cors,
      handler: async (req, reply) => {
        const token = await authenticate(tokens, req);
        await patch(req, resourceFor(token, 'whep', req.params.room, req.params.sid, req.params.identity));
        return reply.status(204).send();
      },
    });

    scope.route<{ Params: { room: string; identity: string; sid: string } }>({
      ...at(ROUTES.whepDelete),
      onRequest: cors,
      handler: async (req, reply) => {
        const token = await authenticate(tokens, req);
        resourceFor(token, 'whep', req.params.room, req.params.sid, req.params.identity).participant.close('client_left');
        return reply.status(200).send();
      },
    });
  });
}
