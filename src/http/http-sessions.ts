import { randomBytes } from 'node:crypto';
import type { AccessToken, Grant } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import { clip } from '../common/limits.ts';
import type { Participant } from '../sfu/participant.ts';
import { firstUfrag } from '../sfu/sdp.ts';
import type { Sfu } from '../sfu/sfu.ts';
import type { ParticipantCapabilities } from '../sfu/signals.ts';
import type { SdpFrag } from './sdp-frag.ts';

/** How a session came: the seed API (`/video/signal`), WHIP or WHEP; also the participant's `joinedVia`. */
export type HttpSessionKind = 'http' | 'whip' | 'whep';

/**
 * A participant whose only signaling is requests made on it: one connection, negotiated
 * once by the client's offer.
 */
export interface HttpSession {
  readonly kind: HttpSessionKind;
  readonly room: string;
  readonly participant: Participant;
  /** WHEP: the identity of the participant it plays. */
  readonly target: string | undefined;
  /** ICE username fragment of the client's offer: a trickle with another one is an ICE restart. */
  readonly ufrag: string | undefined;
  /** The WHIP/WHEP resource's entity tag. */
  readonly etag: string;
}

interface Entry extends HttpSession {
  readonly onClosed: () => void;
}

/** Nothing new reaches one of these after the answer (no channel to offer on). */
const SEED_PARTICIPANT: ParticipantCapabilities = { renegotiates: false, hidden: false, receives: { from: 'all' }, resumable: false };
const WHIP_PARTICIPANT: ParticipantCapabilities = { renegotiates: false, hidden: false, receives: { from: 'none' }, resumable: false };
/** A WHEP player: hidden, it receives one participant's tracks and the room ends it when that participant leaves. */
function whepPlayer(identity: string): ParticipantCapabilities {
  return { renegotiates: false, hidden: true, receives: { from: 'participant', identity }, resumable: false };
}

const SUBSCRIBE_ONLY: ReadonlySet<Grant> = new Set<Grant>(['subscribe']);

/**
 * The live HTTP sessions (seed API, WHIP, WHEP), by participant sid: opens each in the
 * media core, finds it again by sid or identity for the token that owns it, and forgets
 * it when its participant closes, whoever closes it (a DELETE, a leave, a failed
 * connection, a replacing join, the room). `close()` only lets go of the participants:
 * the rooms own them.
 */
export class HttpSessions {
  private readonly sfu: Sfu;
  private readonly sessions = new Map<string, Entry>();
  private closed = false;

  constructor(sfu: Sfu) {
    this.sfu = sfu;
  }

  /** Sessions held; 0 once every participant they spoke for has closed. */
  get size(): number {
    return this.sessions.size;
  }

  /** The seed API: `identity` (the token's, or any for an admin) joins `room` and publishes and receives what the offer says. */
  openSeed(room: string, identity: string, token: AccessToken, offer: string): Promise<{ session: HttpSession; answer: string }> {
    return this.open('http', room, offer, { identity, name: token.name ?? identity, token, grants: token.grants, capabilities: SEED_PARTICIPANT });
  }

  /** WHIP: the token's identity joins `room` and publishes what the offer sends. */
  openWhip(room: string, token: AccessToken, offer: string): Promise<{ session: HttpSession; answer: string }> {
    return this.open('whip', room, offer, { identity: token.identity, name: token.name ?? token.identity, token, grants: token.grants, capabilities: WHIP_PARTICIPANT });
  }

  /**
   * WHEP: a hidden player of what `target` publishes in `room`. ROOM_NOT_FOUND,
   * PEER_NOT_FOUND (also when `target` leaves while the offer is answered), CONFLICT if it
   * publishes nothing yet.
   */
  async openWhep(room: string, target: string, token: AccessToken, offer: string): Promise<{ session: HttpSession; answer: string }> {
    const played = this.sfu.getRoom(room).byIdentity(target);
    if (played === undefined || played.hidden || played.closed) throw new AppError('PEER_NOT_FOUND', `no participant "${target}" in room "${room}"`);
    if (played.published.size === 0) throw new AppError('CONFLICT', `"${target}" publishes nothing yet; try again once it does`);
    const opened = await this.open(
      'whep',
      room,
      offer,
      // The viewer's own identity may be in the room already (watching their own call): the player gets one of its own.
      { identity: `whep-${randomBytes(6).toString('hex')}`, name: token.name ?? token.identity, token, grants: SUBSCRIBE_ONLY, capabilities: whepPlayer(target), owner: token.identity },
      target,
    );
    if (played.closed) {
      opened.session.participant.close('client_left');
      throw new AppError('PEER_NOT_FOUND', `"${target}" left room "${room}"`);
    }
    return opened;
  }

  /** The seed API's session of `identity` in `room`: ROOM_NOT_FOUND, PEER_NOT_FOUND (no seed-API participant by that identity), FORBIDDEN (not the token's). */
  seedSession(token: AccessToken, room: string, identity: string): HttpSession {
    const p = this.sfu.getRoom(room).byIdentity(identity);
    const s = p === undefined ? undefined : this.sessions.get(p.sid);
    if (s === undefined || s.kind !== 'http' || s.participant.closed) throw new AppError('PEER_NOT_FOUND', `no HTTP session for peer "${identity}" in room "${room}"`);
    return this.owned(token, s);
  }

  /** The WHIP or WHEP session `sid` in `room` (playing `target`, for WHEP): PEER_NOT_FOUND, FORBIDDEN (not the token's). */
  resource(token: AccessToken, kind: 'whip' | 'whep', room: string, sid: string, target?: string): HttpSession {
    const s = this.sessions.get(sid);
    if (s === undefined || s.kind !== kind || s.room !== room || s.participant.closed || s.target !== target) {
      throw new AppError('PEER_NOT_FOUND', `no ${kind.toUpperCase()} session "${clip(sid, 64)}" in room "${room}"`);
    }
    return this.owned(token, s);
  }

  /**
   * Applies a trickle fragment. An ICE restart (`restart`, or other credentials than the
   * offer's) is refused, which RFC 9725 allows as long as the current ICE session goes on.
   * A candidate the connection cannot use is discarded and the rest still apply (§4.3.1).
   */
  async trickle(session: HttpSession, frag: SdpFrag, restart: boolean): Promise<void> {
    if (restart || (frag.ufrag !== undefined && frag.ufrag !== session.ufrag)) {
      throw new AppError('BAD_REQUEST', 'ICE restarts are not supported: DELETE this session and POST a new offer');
    }
    const p = session.participant;
    for (const candidate of frag.candidates) {
      try {
        await p.addCandidate('publisher', { candidate, sdpMid: null, sdpMLineIndex: 0, usernameFragment: frag.ufrag ?? null });
      } catch (err) {
        if (!(err instanceof AppError) || err.code !== 'INVALID_CANDIDATE') throw err;
        p.log.debug({ candidate: clip(candidate), err: err.message }, 'trickled candidate discarded');
      }
    }
    if (frag.endOfCandidates) await p.addCandidate('publisher', null);
  }

  /** Idempotent: stops listening to the participants still open and refuses new sessions. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sessions.values()) s.participant.off('closed', s.onClosed);
    this.sessions.clear();
  }

  /**
   * Joins and negotiates the session's one connection. It is held from the join on, so
   * its participant closing at any point (a refused offer included: closed before the
   * error is thrown) removes it. Identity conflicts are the media core's: an HTTP session
   * cannot be told it was replaced, so a second one for an identity present is CONFLICT.
   */
  private async open(
    kind: HttpSessionKind,
    room: string,
    offer: string,
    opts: { identity: string; name: string; token: AccessToken; grants: ReadonlySet<Grant>; capabilities: ParticipantCapabilities; owner?: string },
    target?: string,
  ): Promise<{ session: HttpSession; answer: string }> {
    if (this.closed) throw new AppError('SHUTTING_DOWN', 'server is shutting down');
    if (this.sfu.findRoom(room)?.byIdentity(opts.identity) !== undefined) {
      throw new AppError('CONFLICT', `"${opts.identity}" is already in room "${room}"; leave first (DELETE the session or POST /video/leave)`);
    }
    const joined = this.sfu.join(room, {
      identity: opts.identity,
      name: opts.name,
      grants: opts.grants,
      capabilities: opts.capabilities,
      joinedVia: kind,
      e2ee: opts.token.e2ee,
      owner: opts.owner,
      ifPresent: 'refuse',
    });
    const participant = joined.participant;
    const sid = participant.sid;
    const session: Entry = {
      kind,
      room,
      participant,
      target,
      ufrag: firstUfrag(offer),
      etag: `"${sid}"`,
      onClosed: () => this.sessions.delete(sid),
    };
    this.sessions.set(sid, session);
    participant.once('closed', session.onClosed);
    try {
      const answer = await participant.handleCombinedOffer(offer, joined.room.tracksFor(participant));
      return { session, answer };
    } catch (err) {
      participant.close('connection_failed');
      throw err;
    }
  }

  /** Only the token identity that opened a session, or an admin, may act on it. */
  private owned(token: AccessToken, s: Entry): HttpSession {
    if (s.participant.owner !== token.identity && !token.grants.has('admin')) {
      throw new AppError('FORBIDDEN', `session "${s.participant.sid}" belongs to another identity`);
    }
    return s;
  }
}
