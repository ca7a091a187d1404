import type { WebSocket } from 'ws';
import type { TokenService } from '../auth/tokens.ts';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Config } from '../config.ts';
import { iceServersFor } from '../auth/ice-servers.ts';
import type { RecordingManager } from '../recording/recording-manager.ts';
import type { Participant } from '../sfu/participant.ts';
import type { Sfu } from '../sfu/sfu.ts';
import type { LeaveReason, ParticipantCapabilities, ParticipantSignal, SignalSink } from '../sfu/signals.ts';
import { ClientConnection } from './client-connection.ts';
import { type ClientMessage, PROTOCOL_VERSION } from './messages.ts';
import { verifyJoin } from './join-token.ts';
import { parseClientMessage, type RequestId } from './parse-message.ts';
import { serverMessageFor } from './server-message.ts';

/** A WebSocket participant: two connections renegotiated over the socket, resumable after a drop. */
export const WEBSOCKET_PARTICIPANT: ParticipantCapabilities = {
  renegotiates: true,
  hidden: false,
  receives: { from: 'all' },
  resumable: true,
};

export interface SessionDeps {
  sfu: Sfu;
  tokens: TokenService;
  config: Config;
  recordings: RecordingManager;
  log: Logger;
}

/**
 * One WebSocket connection: validates each message, runs them in arrival order (an offer
 * is applied before the candidates that follow it), and is the participant's signal sink,
 * translating what the media core says into protocol messages. States: awaiting join →
 * joined → closed.
 */
export class SignalingSession extends ClientConnection implements SignalSink {
  private readonly sfu: Sfu;
  private readonly tokens: TokenService;
  private readonly config: Config;
  private readonly recordings: RecordingManager;
  private participant: Participant | undefined;
  private roomName: string | undefined;
  /** Whatever ends the participant, its client hears why before the socket closes. */
  private readonly onParticipantClosed = (reason: LeaveReason) => {
    this.flushHeld();
    this.send({ type: 'left', id: this.leaveId, reason });
    this.ws.close(1000, 'left');
  };
  /**
   * Signals held while a publisher offer is answered: the answer goes first, then the
   * candidates of the connection it describes and the publisher's own track_published.
   */
  private held: ParticipantSignal[] | undefined;
  private leaveId: RequestId;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private leaving = false;

  constructor(ws: WebSocket, deps: SessionDeps) {
    super(ws, deps.log, deps.config.limits);
    this.recordings = deps.recordings;
    this.sfu = deps.sfu;
    this.tokens = deps.tokens;
    this.config = deps.config;
    ws.on('close', () => this.onClose());
  }

  protected onClientFrame(data: Buffer, isBinary: boolean): void {
    if (this.closed) return;
    const parsed = parseClientMessage(data, isBinary, this.config.limits.maxMessageBytes);
    if (!parsed.ok) return this.sendError(parsed.id, parsed.error);
    const msg = parsed.msg;
    this.queue = this.queue.then(() => this.handle(msg)).catch((err: unknown) => this.sendError(msg.id, err));
  }

  private async handle(msg: ClientMessage): Promise<void> {
    if (this.closed && msg.type !== 'leave') return;
    if (msg.type === 'ping') return this.send({ type: 'pong', id: msg.id, t: msg.t });
    if (msg.type === 'join') return this.join(msg);
    const p = this.participant;
    if (p === undefined || p.closed) throw new AppError('NOT_JOINED', 'send "join" first');
    switch (msg.type) {
      case 'offer': {
        this.held ??= [];
        try {
          const sdp = await p.handlePublisherOffer(msg.sdp);
          this.send({ type: 'answer', id: msg.id, target: 'publisher', sdp });
        } finally {
          this.flushHeld();
        }
        return;
      }
      case 'answer':
        await p.handleSubscriberAnswer(msg.sdp);
        return this.ack(msg.id);
      case 'candidate':
        await p.addCandidate(msg.target, msg.candidate);
        return this.ack(msg.id);
      case 'track_info':
        p.setTrackInfo(msg.mid, { source: msg.source, name: msg.name });
        return this.ack(msg.id);
      case 'mute':
        p.setMuted(msg.trackSid, msg.muted);
        return this.ack(msg.id);
      case 'recording': {
        if (!p.grants.has('record')) throw new AppError('FORBIDDEN', 'token lacks the "record" grant');
        const room = this.sfu.getRoom(this.roomName!);
        await (msg.active ? this.recordings.start(room.name) : this.recordings.stop(room.name));
        return this.ack(msg.id);
      }
      case 'leave':
        this.leaving = true;
        this.leaveId = msg.id;
        p.close('client_left');
        return;
    }
  }

  deliver(signal: ParticipantSignal): void {
    if (this.held !== undefined) this.held.push(signal);
    else this.send(serverMessageFor(signal));
  }

  private flushHeld(): void {
    const held = this.held;
    this.held = undefined;
    for (const signal of held ?? []) this.send(serverMessageFor(signal));
  }

  private ack(id: RequestId): void {
    if (id !== undefined) this.send({ type: 'ack', id });
  }

  private async join(msg: Extract<ClientMessage, { type: 'join' }>): Promise<void> {
    if (this.participant !== undefined) throw new AppError('ALREADY_JOINED', 'this connection already joined a room');
    const token = await verifyJoin(msg, this.tokens);
    if (this.closed || !this.open) return;
    const existing = this.sfu.findRoom(token.room)?.byIdentity(token.identity);
    let participant: Participant;
    let resumed = false;
    if (existing !== undefined && existing.capabilities.resumable && existing.awaitingReconnect) {
      participant = existing;
      participant.signalingResumed();
      resumed = true;
    } else {
      participant = this.sfu.join(token.room, {
        identity: token.identity,
        name: msg.name ?? token.name ?? token.identity,
        grants: token.grants,
        capabilities: WEBSOCKET_PARTICIPANT,
        joinedVia: 'ws',
        e2ee: token.e2ee,
      }).participant;
    }
    this.participant = participant;
    this.roomName = token.room;
    this.joinedRoom();
    this.log = participant.log;
    const room = this.sfu.getRoom(token.room);
    this.send({
      type: 'joined',
      id: msg.id,
      protocol: PROTOCOL_VERSION,
      resumed,
      participant: participant.info(),
      room: room.infoFor(participant.sid),
      iceServers: iceServersFor(this.config.ice, token.identity),
      codecs: this.config.rtc.codecs,
    });
    participant.attachSink(this);
    participant.once('closed', this.onParticipantClosed);
    if (resumed) participant.resendPendingOffer();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    const p = this.participant;
    if (p === undefined) return;
    p.detachSink(this);
    p.off('closed', this.onParticipantClosed);
    if (!p.closed && !this.leaving) p.signalingLost();
  }
}
