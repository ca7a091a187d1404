import type { E2eeError, LocalTrack, ParticipantStats, RemoteParticipant, Room, RoomError } from '../client/index.ts';
import { Tile } from './tile.ts';

export interface CallViewElements {
  grid: HTMLElement;
  list: HTMLElement;
  badge: HTMLElement;
  micButton: HTMLButtonElement;
  cameraButton: HTMLButtonElement;
  /** Shown in an end-to-end encrypted room. */
  e2eeBadge: HTMLElement;
  /** Shown while the room is recorded. */
  recordingBadge: HTMLElement;
  /** Starts and stops recording; shown only when `canRecord`. */
  recordButton: HTMLButtonElement;
}

export interface CallViewHooks {
  /** A remote video's first frame was painted. */
  onFirstRemoteFrame(): void;
  /** The browser refused to play sound without a user gesture. */
  onAutoplayBlocked(): void;
  /** E2EE: someone's media stopped decrypting (`err`), or all of it decrypts again (`undefined`). */
  onDecryptProblem(err: E2eeError | undefined): void;
  /** Starting or stopping the recording was refused. */
  onRecordError(err: RoomError): void;
}

const STATS_INTERVAL_MS = 2000;
/** The worker repeats a decryption error every second while it lasts; this long without one, it is over. */
const DECRYPT_QUIET_MS = 3000;

/**
 * Shows one joined Room: the tiles (ours first), the participant list, the state badge,
 * the mute buttons. Everything it draws follows the room's events.
 */
export class CallView {
  private readonly room: Room;
  private readonly els: CallViewElements;
  private readonly hooks: CallViewHooks;
  private readonly local: Tile;
  /** Remote tiles by participant sid. */
  private readonly tiles = new Map<string, Tile>();
  private readonly statsTimer: ReturnType<typeof setInterval>;
  private readonly onMic = () => void this.toggle('microphone');
  private readonly onCamera = () => void this.toggle('camera');
  private readonly onRecord = () => void this.toggleRecording();
  /** Participants whose media does not decrypt, and the timer that clears each. */
  private readonly decryptFailing = new Map<string, ReturnType<typeof setTimeout>>();
  private closed = false;

  constructor(room: Room, els: CallViewElements, hooks: CallViewHooks, opts: { canRecord: boolean }) {
    this.room = room;
    this.els = els;
    this.hooks = hooks;
    this.local = new Tile({ identity: room.localParticipant.identity, name: room.localParticipant.name, local: true });
    els.grid.append(this.local.el);
    for (const p of room.participants.values()) this.addParticipant(p);
    room.on('participantJoined', (p) => this.addParticipant(p));
    room.on('participantLeft', (p) => {
      this.tiles.get(p.sid)?.remove();
      this.tiles.delete(p.sid);
      this.renderList();
    });
    room.on('trackSubscribed', (media, track, p) => {
      const tile = this.tiles.get(p.sid);
      if (tile === undefined) return;
      if (track.kind === 'video') tile.setVideo(media, () => this.hooks.onFirstRemoteFrame());
      else void tile.setAudio(media).then((playing) => playing || this.hooks.onAutoplayBlocked());
    });
    room.on('trackUnsubscribed', (_media, track, p) => {
      const tile = this.tiles.get(p.sid);
      if (track.kind === 'video') tile?.setVideo(undefined);
      else void tile?.setAudio(undefined);
    });
    room.on('trackMuted', (track, p) => {
      (p === undefined ? this.local : this.tiles.get(p.sid))?.setMuted(track.kind, track.muted);
      this.renderList();
    });
    room.on('connectionStateChanged', (state) => this.showState(state));
    room.on('recordingStatusChanged', () => this.renderRecording());
    room.on('e2eeError', (err) => this.onDecryptError(err));
    els.micButton.addEventListener('click', this.onMic);
    els.cameraButton.addEventListener('click', this.onCamera);
    els.recordButton.addEventListener('click', this.onRecord);
    els.recordButton.hidden = !opts.canRecord;
    els.e2eeBadge.hidden = !room.e2ee;
    this.renderRecording();
    this.showState(room.state);
    this.renderList();
    this.statsTimer = setInterval(() => void this.refreshStats(), STATS_INTERVAL_MS);
  }

  /** Our camera goes into our own tile once publishing started. */
  showLocalTracks(tracks: LocalTrack[]): void {
    const video = tracks.find((t) => t.kind === 'video');
    if (video !== undefined) this.local.setVideo(video.mediaTrack);
    this.renderButtons();
  }

  /** After a click: retry sound the autoplay policy held back. */
  resumeAudio(): void {
    for (const tile of this.tiles.values()) void tile.playAudio();
  }

  private addParticipant(p: RemoteParticipant): void {
    if (this.tiles.has(p.sid)) return;
    const tile = new Tile({ identity: p.identity, name: p.name, local: false });
    for (const t of p.tracks.values()) tile.setMuted(t.kind, t.muted);
    this.tiles.set(p.sid, tile);
    this.els.grid.append(tile.el);
    this.renderList();
  }

  private async toggle(source: 'microphone' | 'camera'): Promise<void> {
    const track = this.room.localTracks.find((t) => t.source === source);
    if (track === undefined) return;
    const muted = !track.muted;
    if (source === 'microphone') await this.room.setMicrophoneMuted(muted);
    else await this.room.setCameraMuted(muted);
    this.local.setMuted(track.kind, muted);
    this.renderButtons();
  }

  private async toggleRecording(): Promise<void> {
    this.els.recordButton.disabled = true;
    try {
      await this.room.setRecording(!this.room.recording);
    } catch (err) {
      this.hooks.onRecordError(err as RoomError);
    } finally {
      this.els.recordButton.disabled = false;
    }
  }

  private renderRecording(): void {
    const on = this.room.recording;
    this.els.recordingBadge.hidden = !on;
    this.els.recordButton.textContent = on ? 'Stop recording' : 'Record';
    this.els.recordButton.setAttribute('aria-pressed', String(on));
  }

  private onDecryptError(err: E2eeError): void {
    const sid = err.participant?.sid ?? '';
    clearTimeout(this.decryptFailing.get(sid));
    this.decryptFailing.set(
      sid,
      setTimeout(() => {
        this.decryptFailing.delete(sid);
        this.tiles.get(sid)?.setDecryptFailing(false);
        if (this.decryptFailing.size === 0 && !this.closed) this.hooks.onDecryptProblem(undefined);
      }, DECRYPT_QUIET_MS),
    );
    this.tiles.get(sid)?.setDecryptFailing(true);
    this.hooks.onDecryptProblem(err);
  }

  private renderButtons(): void {
    const mic = this.room.localTracks.find((t) => t.source === 'microphone');
    const cam = this.room.localTracks.find((t) => t.source === 'camera');
    this.els.micButton.disabled = mic === undefined;
    this.els.cameraButton.disabled = cam === undefined;
    this.els.micButton.textContent = mic?.muted === true ? 'Unmute mic' : 'Mute mic';
    this.els.micButton.setAttribute('aria-pressed', String(mic?.muted === true));
    this.els.cameraButton.textContent = cam?.muted === true ? 'Start camera' : 'Stop camera';
    this.els.cameraButton.setAttribute('aria-pressed', String(cam?.muted === true));
  }

  private showState(state: string): void {
    this.els.badge.textContent = state;
    this.els.badge.dataset.state = state;
  }

  private renderList(): void {
    const rows: [string, string, boolean, boolean][] = [];
    const me = this.room.localParticipant;
    const mine = (kind: 'audio' | 'video') => this.room.localTracks.find((t) => t.kind === kind)?.muted === true;
    rows.push([me.identity, `${me.name} (you)`, mine('audio'), mine('video')]);
    for (const p of this.room.participants.values()) {
      rows.push([p.identity, p.name, p.track('audio')?.muted === true, p.track('video')?.muted === true]);
    }
    this.els.list.replaceChildren(
      ...rows.map(([identity, name, micOff, camOff]) => {
        const li = document.createElement('li');
        li.dataset.identity = identity;
        const label = document.createElement('span');
        label.textContent = name;
        const icons = document.createElement('span');
        icons.className = 'icons';
        icons.textContent = [micOff ? 'mic off' : '', camOff ? 'camera off' : ''].filter(Boolean).join(' · ');
        li.append(label, icons);
        return li;
      }),
    );
  }

  private async refreshStats(): Promise<void> {
    let stats: ParticipantStats[];
    try {
      stats = await this.room.getStats();
    } catch {
      return; // a PeerConnection closed under us; the next round has fresh ones
    }
    if (this.closed) return;
    for (const s of stats) {
      const tile = s.local ? this.local : this.tiles.get(s.participantSid);
      tile?.setStats(describe(s));
    }
  }

  /** Idempotent: stops the stats timer and removes everything this view drew. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.statsTimer);
    for (const timer of this.decryptFailing.values()) clearTimeout(timer);
    this.decryptFailing.clear();
    this.els.micButton.removeEventListener('click', this.onMic);
    this.els.cameraButton.removeEventListener('click', this.onCamera);
    this.els.recordButton.removeEventListener('click', this.onRecord);
    this.els.recordButton.hidden = true;
    this.els.e2eeBadge.hidden = true;
    this.els.recordingBadge.hidden = true;
    this.local.remove();
    for (const tile of this.tiles.values()) tile.remove();
    this.tiles.clear();
    this.els.list.replaceChildren();
  }
}

/** "640×480 · 480 kbps · loss 0.1% · rtt 3 ms" */
function describe(s: ParticipantStats): string {
  const video = s.tracks.find((t) => t.kind === 'video');
  const parts: string[] = [];
  if (video?.frameWidth) parts.push(`${video.frameWidth}×${video.frameHeight}`);
  parts.push(`${Math.round(s.bitrate / 1000)} kbps`);
  parts.push(`loss ${(s.packetLoss * 100).toFixed(1)}%`);
  if (s.roundTripTime !== undefined) parts.push(`rtt ${Math.round(s.roundTripTime * 1000)} ms`);
  return parts.join(' · ');
}
