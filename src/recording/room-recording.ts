import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../common/logger.ts';
import type { Participant } from '../sfu/participant.ts';
import type { Room } from '../sfu/room.ts';
import { ParticipantRecording, recordable, type RecordedFile } from './participant-recording.ts';

/** Tracks of one participant usually arrive together; wait this long so one file holds both. */
const SETTLE_MS = 500;

export interface RecordingMetadata {
  id: string;
  room: string;
  startedAt: string;
  endedAt: string | undefined;
  files: RecordedFile[];
  /** Tracks left out, and why (e.g. H.264 does not go in WebM). */
  skipped: { identity: string; trackSid: string; codec: string; reason: string }[];
}

/**
 * A recording of one room: one WebM per participant (a new file, "segment", if the
 * participant's set of tracks changes), participants who join or leave on the way
 * included. Writes `recording.json` next to the files when it stops.
 */
export class RoomRecording {
  readonly id = `RC_${randomBytes(6).toString('hex')}`;
  readonly dir: string;
  readonly room: Room;
  private readonly log: Logger;
  private readonly active = new Map<string, { rec: ParticipantRecording; trackSids: Set<string> }>();
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private readonly stopped: Promise<RecordedFile>[] = [];
  private readonly segments = new Map<string, number>();
  private readonly meta: RecordingMetadata;
  private readonly detach: (() => void)[] = [];
  private stopping: Promise<RecordingMetadata> | undefined;

  constructor(room: Room, baseDir: string, log: Logger) {
    this.room = room;
    this.dir = join(baseDir, this.id);
    this.log = log.child({ recording: this.id });
    this.meta = { id: this.id, room: room.name, startedAt: new Date().toISOString(), endedAt: undefined, files: [], skipped: [] };
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.writeMetadata();
    const onJoined = (p: Participant) => this.watch(p);
    this.room.on('participantJoined', onJoined);
    this.detach.push(() => this.room.off('participantJoined', onJoined));
    for (const p of this.room.all()) this.watch(p);
    this.log.info({ room: this.room.name, dir: this.dir }, 'recording started');
  }

  private watch(p: Participant): void {
    if (p.hidden) return;
    const schedule = () => this.schedule(p);
    const closed = () => this.finish(p.sid);
    p.on('trackPublished', schedule);
    p.on('trackUnpublished', schedule);
    p.on('closed', closed);
    this.detach.push(() => {
      p.off('trackPublished', schedule);
      p.off('trackUnpublished', schedule);
      p.off('closed', closed);
    });
    if (p.published.size > 0) this.schedule(p);
  }

  /** (Re)starts a participant's file once its track set has settled. */
  private schedule(p: Participant): void {
    if (this.stopping !== undefined) return;
    clearTimeout(this.pending.get(p.sid));
    const timer = setTimeout(() => {
      this.pending.delete(p.sid);
      if (p.closed || this.stopping !== undefined) return;
      const tracks = [...p.published.values()];
      for (const t of tracks) {
        if (!recordable(t) && !this.meta.skipped.some((s) => s.trackSid === t.sid)) {
          this.meta.skipped.push({ identity: p.identity, trackSid: t.sid, codec: t.codecName, reason: `${t.codecName} cannot be written to WebM` });
        }
      }
      const wanted = tracks.filter(recordable);
      const current = this.active.get(p.sid);
      if (current !== undefined && wanted.length === current.trackSids.size && wanted.every((t) => current.trackSids.has(t.sid))) return;
      this.finish(p.sid);
      if (wanted.length === 0) return;
      const segment = (this.segments.get(p.sid) ?? 0) + 1;
      this.segments.set(p.sid, segment);
      const file = `${safeName(p.identity)}-${p.sid}-${segment}.webm`;
      const rec = new ParticipantRecording({ path: join(this.dir, file), participantSid: p.sid, identity: p.identity, tracks: wanted, log: this.log });
      this.active.set(p.sid, { rec, trackSids: new Set(wanted.map((t) => t.sid)) });
      this.log.info({ participant: p.identity, file, codecs: rec.info.codecs }, 'recording participant');
    }, SETTLE_MS);
    timer.unref();
    this.pending.set(p.sid, timer);
  }

  private finish(participantSid: string): void {
    clearTimeout(this.pending.get(participantSid));
    this.pending.delete(participantSid);
    const current = this.active.get(participantSid);
    if (current === undefined) return;
    this.active.delete(participantSid);
    this.stopped.push(current.rec.stop());
  }

  /** Closes every file (playable) and writes the metadata. Idempotent. */
  stop(): Promise<RecordingMetadata> {
    this.stopping ??= (async () => {
      for (const d of this.detach) d();
      for (const sid of [...this.pending.keys(), ...this.active.keys()]) this.finish(sid);
      this.meta.files = await Promise.all(this.stopped);
      this.meta.endedAt = new Date().toISOString();
      await this.writeMetadata();
      this.log.info({ files: this.meta.files.length }, 'recording stopped');
      return this.meta;
    })();
    return this.stopping;
  }

  metadata(): RecordingMetadata {
    return this.meta;
  }

  private writeMetadata(): Promise<void> {
    return writeFile(join(this.dir, 'recording.json'), `${JSON.stringify(this.meta, null, 2)}\n`);
  }
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64) || 'participant';
}
