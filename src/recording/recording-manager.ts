import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Room } from '../sfu/room.ts';
import type { Sfu } from '../sfu/sfu.ts';
import { type RecordingMetadata, RoomRecording } from './room-recording.ts';

/**
 * Starts and stops room recordings, refuses them for end-to-end encrypted rooms (the
 * server only ever sees ciphertext there), and reads finished ones back from disk.
 */
export class RecordingManager {
  private readonly dir: string;
  private readonly sfu: Sfu;
  private readonly log: Logger;
  private readonly byRoom = new Map<Room, RoomRecording>();

  constructor(dir: string, sfu: Sfu, log: Logger) {
    this.dir = dir;
    this.sfu = sfu;
    this.log = log;
  }

  active(room: Room): RoomRecording | undefined {
    return this.byRoom.get(room);
  }

  async start(roomName: string): Promise<RecordingMetadata> {
    const room = this.sfu.getRoom(roomName);
    if (room.e2ee) throw new AppError('E2EE_RECORDING_FORBIDDEN', `room "${roomName}" is end-to-end encrypted and cannot be recorded`);
    if (this.byRoom.has(room)) throw new AppError('CONFLICT', `room "${roomName}" is already being recorded`);
    const rec = new RoomRecording(room, this.dir, this.log);
    this.byRoom.set(room, rec);
    const onClosed = () => void this.stopRoom(room).catch(() => {});
    room.once('closed', onClosed);
    try {
      await rec.start();
    } catch (err) {
      this.byRoom.delete(room);
      room.off('closed', onClosed);
      throw err;
    }
    room.setRecording(true);
    return rec.metadata();
  }

  async stop(roomName: string): Promise<RecordingMetadata> {
    const room = this.sfu.getRoom(roomName);
    if (!this.byRoom.has(room)) throw new AppError('CONFLICT', `room "${roomName}" is not being recorded`);
    return this.stopRoom(room);
  }

  /** Safe to call twice (a stop request racing the room closing): the second gets the same result. */
  private async stopRoom(room: Room): Promise<RecordingMetadata> {
    const rec = this.byRoom.get(room);
    if (rec === undefined) throw new AppError('CONFLICT', `room "${room.name}" is not being recorded`);
    room.setRecording(false);
    const meta = await rec.stop();
    if (this.byRoom.get(room) === rec) this.byRoom.delete(room);
    return meta;
  }

  /** Every recording on disk, newest first. */
  async list(): Promise<RecordingMetadata[]> {
    const entries = await readdir(this.dir, { withFileTypes: true }).catch(() => []);
    const out: RecordingMetadata[] = [];
    for (const e of entries) {
      if (!e.isDirectory() || !/^RC_[0-9a-f]{12}$/.test(e.name)) continue;
      const meta = await this.get(e.name).catch(() => undefined);
      if (meta !== undefined) out.push(meta);
    }
    return out.sort((a, b) => b.startedAt.localeCompare(a.startedAt));
  }

  async get(id: string): Promise<RecordingMetadata> {
    if (!/^RC_[0-9a-f]{12}$/.test(id)) throw new AppError('RECORDING_NOT_FOUND', `no recording "${id}"`);
    for (const rec of this.byRoom.values()) if (rec.id === id) return rec.metadata();
    try {
      return JSON.parse(await readFile(join(this.dir, id, 'recording.json'), 'utf8')) as RecordingMetadata;
    } catch {
      throw new AppError('RECORDING_NOT_FOUND', `no recording "${id}"`);
    }
  }

  /** Path of one file of a finished recording; only names the metadata lists are served. */
  async filePath(id: string, file: string): Promise<string> {
    const meta = await this.get(id);
    if (!meta.files.some((f) => f.file === file)) throw new AppError('RECORDING_NOT_FOUND', `recording "${id}" has no file "${file}"`);
    return join(this.dir, id, file);
  }

  /** Server shutdown: every file is closed and playable. */
  async close(): Promise<void> {
    await Promise.all([...this.byRoom.keys()].map((room) => this.stopRoom(room)));
  }
}
