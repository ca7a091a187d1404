import type { RTCRtpTransceiver } from 'werift';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import { DownTrack } from './down-track.ts';
import { subscriberCodec } from './media-config.ts';
import type { MediaStats, NegotiationFailureReason } from './media-stats.ts';
import type { OverloadGuard } from './overload-guard.ts';
import type { PublishedTrack } from './published-track.ts';
import type { RtcTransport } from './rtc-transport.ts';
import { assertAnswerTo } from './sdp.ts';
import type { IceCandidate, SubscriptionOffer } from './signals.ts';

/** Subscription changes within this long go into one offer. */
const COALESCE_MS = 20;
/** Failed negotiations in a row after which the participant is removed ('negotiation_failed'). */
export const MAX_NEGOTIATION_FAILURES = 3;

interface SubscriberConnectionEvents extends Record<string, unknown[]> {
  /** An offer for the client to answer (`handleAnswer`). */
  offer: [SubscriptionOffer];
  /** A local ICE candidate; none before the first offer has been emitted. */
  candidate: [IceCandidate | null];
  /** MAX_NEGOTIATION_FAILURES in a row: the owner removes the participant. */
  failed: [];
}

export interface SubscriberConnectionOptions {
  subscriberSid: string;
  /**
   * Renegotiating: the participant's subscriber transport, owned (closed) from now on; the
   * server makes every offer on it. Otherwise the participant's one combined transport
   * (not owned): DownTracks go onto the receiving m-lines of its client's offer (`attach`)
   * and nothing is added later.
   */
  transport: RtcTransport;
  renegotiates: boolean;
  /** `Config['rtc'].maxMediaSections`: the offers never have more m-lines. */
  maxSections: number;
  /**
   * `Config['rtc'].negotiationTimeoutMs` (SCV_NEGOTIATION_TIMEOUT, 10 s): an offer not
   * answered by then is withdrawn and made afresh. Long enough for a browser on a slow link
   * with a busy main thread; short enough that a lost answer costs seconds, not the call.
   */
  answerTimeoutMs: number;
  stats: MediaStats;
  overload: OverloadGuard;
  log: Logger;
}

/**
 * What a participant receives: its DownTracks by published track sid on the transceivers
 * of its receiving connection, and for a renegotiating participant the server-offers state
 * machine of that connection. A transceiver whose track ended goes `inactive` and, once a
 * negotiation has said so, carries the next subscription of its kind (same mid, same SSRC,
 * numbering continued by the DownTrack), so the SDP never holds more m-lines than the most
 * tracks received at once. Never two offers in flight; an answer that fails or never comes
 * withdraws the offer (rollback) and a fresh one follows.
 */
export class SubscriberConnection extends TypedEmitter<SubscriberConnectionEvents> {
  readonly transport: RtcTransport;
  private readonly subscriberSid: string;
  private readonly renegotiates: boolean;
  private readonly maxSections: number;
  private readonly answerTimeoutMs: number;
  private readonly stats: MediaStats;
  private readonly overload: OverloadGuard;
  private readonly log: Logger;
  /** By published track sid. */
  private readonly downTracks = new Map<string, DownTrack>();
  /** Inactive transceivers a negotiation has confirmed, ready for the next track of their kind. */
  private readonly free: RTCRtpTransceiver[] = [];
  /** Transceivers made inactive, with the number of the first offer that says so. */
  private readonly released = new Map<RTCRtpTransceiver, number>();
  /**
   * DownTracks not yet sending, with the number of the latest offer that carried them (0:
   * none yet). They start once an answer to such an offer is applied: before, the client
   * has the m-line inactive or for another track (a reused sender still has the old codec).
   */
  private readonly unstarted = new Map<DownTrack, number>();
  /** Subscriptions that found no m-line (the connection has its most): made as m-lines free up. */
  private readonly waiting: PublishedTrack[] = [];
  /** Local candidates gathered before the first offer went out. */
  private heldCandidates: (IceCandidate | null)[] | undefined = [];
  /** Numbers the offers; an async step that finds a newer one gives up. */
  private offers = 0;
  private negotiating = false;
  private applying = false;
  private renegotiate = false;
  private pendingOffer: SubscriptionOffer | undefined;
  /** The last offer given up, to tell a late answer to it from a broken one. */
  private supersededSdp: string | undefined;
  private failures = 0;
  private coalesceTimer: NodeJS.Timeout | undefined;
  private answerTimer: NodeJS.Timeout | undefined;
  private recoveryTimer: NodeJS.Timeout | undefined;
  /** Signaling is down: an offer sent meanwhile has no deadline. */
  private suspended = false;
  private closed = false;

  constructor(opts: SubscriberConnectionOptions) {
    super();
    this.transport = opts.transport;
    this.subscriberSid = opts.subscriberSid;
    this.renegotiates = opts.renegotiates;
    this.maxSections = opts.maxSections;
    this.answerTimeoutMs = opts.answerTimeoutMs;
    this.stats = opts.stats;
    this.overload = opts.overload;
    this.log = opts.log;
    if (this.renegotiates) {
      // werift gathers while the first offer is set as local description: candidates
      // before that offer would reach a client with nothing to add them to.
      this.transport.on('candidate', (c) => {
        if (this.heldCandidates !== undefined) this.heldCandidates.push(c);
        else this.emit('candidate', c);
      });
    } else {
      this.heldCandidates = undefined;
    }
  }

  has(trackSid: string): boolean {
    return this.downTracks.has(trackSid);
  }

  /**
   * Renegotiating only: sends `track` on a free transceiver of its kind, else on a new one,
   * and offers it; with no m-line to be had, it waits for one to free up.
   */
  subscribe(track: PublishedTrack): void {
    if (this.closed || !this.renegotiates || this.downTracks.has(track.sid) || this.waiting.includes(track)) return;
    const t = this.transceiverFor(track.kind);
    if (t === undefined) {
      this.waiting.push(track);
      this.log.warn({ track: track.sid, maxSections: this.maxSections, waiting: this.waiting.length }, 'subscription waits: the subscriber connection has its most m-lines');
      return;
    }
    this.attach(track, t);
    this.scheduleNegotiation();
  }

  /** Waiting subscriptions for which an m-line of their kind is free now. */
  private admitWaiting(): void {
    for (const track of [...this.waiting]) {
      if (!this.free.some((t) => t.kind === track.kind)) continue;
      this.waiting.splice(this.waiting.indexOf(track), 1);
      this.subscribe(track);
    }
  }

  private transceiverFor(kind: 'audio' | 'video'): RTCRtpTransceiver | undefined {
    const i = this.free.findIndex((t) => t.kind === kind);
    if (i !== -1) {
      const [t] = this.free.splice(i, 1);
      t!.setDirection('sendonly');
      return t;
    }
    const pc = this.transport.pc;
    if (pc.getTransceivers().length >= this.maxSections) return undefined;
    return pc.addTransceiver(kind, { direction: 'sendonly' });
  }

  /** Forwards `track` on `t` (combined connections: a receiving m-line of the client's offer). */
  attach(track: PublishedTrack, t: RTCRtpTransceiver): void {
    if (this.closed) return;
    t.setCodecPreferences([subscriberCodec(track.codec)]);
    t.sender.streamId = track.ownerSid;
    const dt = new DownTrack(track, t, this.subscriberSid, this.stats, this.overload, this.log);
    this.downTracks.set(track.sid, dt);
    dt.once('closed', () => this.release(track.sid, dt));
    // A combined connection's answer is made right after: its m-lines carry these tracks from then on.
    if (this.renegotiates) this.unstarted.set(dt, 0);
    else track.addDownTrack(dt);
  }

  /** Stops receiving `track`; its transceiver goes inactive. Closing the track does the same. */
  unsubscribe(track: PublishedTrack): void {
    const i = this.waiting.indexOf(track);
    if (i !== -1) this.waiting.splice(i, 1);
    this.downTracks.get(track.sid)?.close();
  }

  private release(trackSid: string, dt: DownTrack): void {
    if (this.downTracks.get(trackSid) !== dt) return;
    this.downTracks.delete(trackSid);
    this.unstarted.delete(dt);
    if (this.closed) return;
    // Not transceiver.stop(): on the BUNDLE-tag m-line werift tears the transport down (docs/werift.md, W4).
    dt.transceiver.setDirection('inactive');
    if (!this.renegotiates) return;
    this.released.set(dt.transceiver, this.offers + 1);
    this.scheduleNegotiation();
  }

  // ---- negotiation ----------------------------------------------------------------------

  private scheduleNegotiation(): void {
    if (this.closed || !this.renegotiates) return;
    if (this.negotiating) {
      this.renegotiate = true;
      return;
    }
    if (this.coalesceTimer !== undefined) return;
    this.coalesceTimer = setTimeout(() => {
      this.coalesceTimer = undefined;
      void this.sendOffer();
    }, COALESCE_MS);
  }

  private async sendOffer(): Promise<void> {
    if (this.closed) return;
    this.negotiating = true;
    this.renegotiate = false;
    const n = ++this.offers;
    // What this offer carries; a change while it is made goes into the next one.
    const carried = [...this.downTracks.values()];
    for (const dt of carried) if (this.unstarted.has(dt)) this.unstarted.set(dt, n);
    let sdp: string;
    try {
      sdp = await this.transport.createOffer();
    } catch (err) {
      if (!this.closed && n === this.offers) this.fail('offer_failed', err);
      return;
    }
    if (this.closed || n !== this.offers) return;
    const tracks: SubscriptionOffer['tracks'] = {};
    for (const dt of carried) {
      const mid = dt.transceiver.mid;
      if (mid === undefined || mid === null || this.downTracks.get(dt.track.sid) !== dt) continue;
      const t = dt.track;
      tracks[mid] = { participantSid: t.ownerSid, identity: t.ownerIdentity, trackSid: t.sid, kind: t.kind, source: t.source, name: t.name };
    }
    this.pendingOffer = { sdp, tracks };
    this.armAnswerTimer(n);
    this.emit('offer', this.pendingOffer);
    const held = this.heldCandidates;
    this.heldCandidates = undefined;
    for (const c of held ?? []) this.emit('candidate', c);
  }

  private armAnswerTimer(n: number): void {
    clearTimeout(this.answerTimer);
    if (this.suspended) return;
    this.answerTimer = setTimeout(() => {
      this.answerTimer = undefined;
      if (this.negotiating && !this.applying && n === this.offers) this.fail('timeout', new Error(`no answer within ${this.answerTimeoutMs} ms`));
    }, this.answerTimeoutMs);
    this.answerTimer.unref();
  }

  /**
   * The client's answer to the pending offer. Refused: it throws (the client hears why), and
   * the offer is withdrawn and a fresh one follows.
   */
  async handleAnswer(sdp: string): Promise<void> {
    const offer = this.pendingOffer;
    if (this.closed || !this.renegotiates || !this.negotiating || offer === undefined || this.applying) {
      throw this.supersededBy(sdp) ?? new AppError('CONFLICT', 'no subscriber offer is waiting for an answer');
    }
    const n = this.offers;
    this.applying = true;
    try {
      await this.transport.applyAnswer(sdp);
    } catch (err) {
      if (this.closed || n !== this.offers) throw err;
      if (!fitsOffer(sdp, offer.sdp)) {
        const superseded = this.supersededBy(sdp);
        if (superseded !== undefined) throw superseded;
      }
      this.fail('invalid_answer', err);
      throw err;
    } finally {
      this.applying = false;
    }
    if (this.closed || n !== this.offers) return;
    clearTimeout(this.answerTimer);
    this.answerTimer = undefined;
    this.negotiating = false;
    this.pendingOffer = undefined;
    this.supersededSdp = undefined;
    this.failures = 0;
    for (const [dt, offered] of this.unstarted) {
      if (offered === 0 || offered > n) continue;
      this.unstarted.delete(dt);
      dt.track.addDownTrack(dt);
    }
    for (const [t, offered] of this.released) {
      if (offered > n) continue;
      this.released.delete(t);
      this.free.push(t);
    }
    this.admitWaiting();
    if (this.renegotiate) this.scheduleNegotiation();
  }

  /** A CONFLICT if `sdp` answers the offer given up last (and so not the pending one). */
  private supersededBy(sdp: string): AppError | undefined {
    if (this.supersededSdp === undefined || !fitsOffer(sdp, this.supersededSdp)) return undefined;
    return new AppError('CONFLICT', 'this answer is for an earlier subscriber offer, replaced since: answer the latest offer');
  }

  /**
   * Gives the pending offer up: counted and logged now; rolled back, and a fresh offer sent
   * (or the participant given up), on the next turn of the event loop, so a client whose
   * answer failed hears why before it gets the next offer.
   */
  private fail(reason: NegotiationFailureReason, err: unknown): void {
    this.failures++;
    this.stats.negotiationFailures[reason]++;
    this.log.warn({ reason, failures: this.failures, err: (err as Error).message }, 'subscriber negotiation failed, offer withdrawn');
    clearTimeout(this.answerTimer);
    this.answerTimer = undefined;
    this.supersededSdp = this.pendingOffer?.sdp ?? this.supersededSdp;
    this.pendingOffer = undefined;
    const n = ++this.offers;
    this.recoveryTimer = setTimeout(() => void this.recover(n), 0);
  }

  private async recover(n: number): Promise<void> {
    this.recoveryTimer = undefined;
    try {
      await this.transport.rollback();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'rolling back the subscriber offer failed');
    }
    if (this.closed || n !== this.offers) return;
    this.negotiating = false;
    if (this.failures >= MAX_NEGOTIATION_FAILURES) {
      this.emit('failed');
      return;
    }
    await this.sendOffer();
  }

  /** The client (re)connected: it must see the pending offer, and gets the full answer time again. */
  resendPendingOffer(): void {
    this.suspended = false;
    if (this.closed || !this.negotiating || this.pendingOffer === undefined) return;
    this.armAnswerTimer(this.offers);
    this.emit('offer', this.pendingOffer);
  }

  /** Nobody can answer now (signaling lost): offers wait without a deadline until `resendPendingOffer`. */
  suspend(): void {
    this.suspended = true;
    clearTimeout(this.answerTimer);
    this.answerTimer = undefined;
  }

  addCandidate(candidate: IceCandidate | null): Promise<void> {
    return this.transport.addCandidate(candidate);
  }

  /** Idempotent: closes every DownTrack, the timers and (renegotiating) the transport. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.coalesceTimer);
    clearTimeout(this.answerTimer);
    clearTimeout(this.recoveryTimer);
    const downTracks = [...this.downTracks.values()];
    this.downTracks.clear();
    for (const dt of downTracks) dt.close();
    this.free.length = 0;
    this.released.clear();
    this.unstarted.clear();
    this.waiting.length = 0;
    this.heldCandidates = undefined;
    if (this.renegotiates) this.transport.close();
    this.removeAllListeners();
  }
}

function fitsOffer(answerSdp: string, offerSdp: string): boolean {
  try {
    assertAnswerTo(answerSdp, offerSdp);
    return true;
  } catch {
    return false;
  }
}
