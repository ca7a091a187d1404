import { stat } from 'node:fs/promises';
import {
  DepacketizeCallback,
  JitterBufferCallback,
  RtpSourceCallback,
  RtpTimeCallback,
  saveToFileSystem,
  WebmCallback,
  type WebmTrack,
} from 'werift/nonstandard';
import type { Logger } from '../common/logger.ts';
import type { PublishedTrack, RtpSink } from '../sfu/published-track.ts';

/** Codecs a WebM file can carry; anything else is left out of the recording. */
const WEBM_CODECS: Record<string, 'VP8' | 'VP9' | 'OPUS'> = { vp8: 'VP8', vp9: 'VP9', opus: 'OPUS' };

export function recordable(track: PublishedTrack): boolean {
  return WEBM_CODECS[track.codecName] !== undefined;
}

export interface RecordedFile {
  participantSid: string;
  identity: string;
  file: string;
  startedAt: string;
  endedAt: string | undefined;
  codecs: string[];
  bytes: number;
}

/** How long to wait for the WebM writer to finish after the sources stop. */
const FINISH_TIMEOUT_MS = 5_000;
/**
 * Video packets the jitter buffer holds at most (werift's default is 10,000). It scans
 * every held packet on each arrival, and a publisher's junk (sequence numbers ahead,
 * timestamps in the future) stays held until the buffer is full; 200 ms of a 2 Mbit/s
 * stream is ~40 packets.
 */
const JITTER_BUFFER_PACKETS = 512;

/**
 * One participant's tracks written to one WebM file, straight from the SFU's packets:
 * RTP → (video: jitter buffer) → timestamps → depacketizer → WebM. No PeerConnection.
 * The first video frame written is a keyframe (the writer waits for one, and the
 * recording asks the publisher for one until it has one, and again after a loss).
 */
export class ParticipantRecording {
  readonly path: string;
  readonly info: RecordedFile;
  private readonly sources: RtpSourceCallback[] = [];
  private readonly attached: { track: PublishedTrack; sink: RtpSink }[] = [];
  private readonly finished: Promise<void>;
  private readonly log: Logger;
  private stopping: Promise<RecordedFile> | undefined;
  private firstPacketAt: number | undefined;
  private lastPacketAt: number | undefined;
  private writerFailed = false;

  constructor(opts: { path: string; participantSid: string; identity: string; tracks: PublishedTrack[]; log: Logger }) {
    this.path = opts.path;
    this.log = opts.log;
    const tracks = opts.tracks.filter(recordable);
    this.info = {
      participantSid: opts.participantSid,
      identity: opts.identity,
      file: opts.path.split('/').pop()!,
      startedAt: new Date().toISOString(),
      endedAt: undefined,
      codecs: tracks.map((t) => t.codecName),
      bytes: 0,
    };
    const webmTracks: (WebmTrack & { track: PublishedTrack })[] = tracks.map((track, i) => ({
      kind: track.kind,
      codec: WEBM_CODECS[track.codecName]!,
      clockRate: track.kind === 'video' ? 90000 : 48000,
      trackNumber: i + 1,
      // WebM wants a size up front; players take the real one from the bitstream.
      ...(track.kind === 'video' ? { width: 640, height: 480 } : {}),
      track,
    }));
    const webm = new WebmCallback(webmTracks, { duration: 1000 * 60 * 60 * 24 });
    const save = saveToFileSystem(this.path);
    let resolveFinished!: () => void;
    this.finished = new Promise((r) => (resolveFinished = r));
    webm.pipe(async (output) => {
      if (await save(output)) resolveFinished();
    });
    for (const t of webmTracks) {
      const source = new RtpSourceCallback();
      const time = new RtpTimeCallback(t.clockRate);
      if (t.kind === 'video') {
        const jitter = new JitterBufferCallback(t.clockRate, { bufferSize: JITTER_BUFFER_PACKETS });
        const depacketizer = new DepacketizeCallback(t.codec, { isFinalPacketInSequence: (h) => h.marker });
        source.pipe(jitter.input);
        jitter.pipe((out) => {
          // A packet given up for lost leaves the frames after it undecodable until the next
          // keyframe: ask for one, as a browser's decoder would.
          if (out.isPacketLost !== undefined) t.track.requestKeyframe();
          time.input(out);
        });
        time.pipe(depacketizer.input);
        depacketizer.pipe(webm.inputVideo);
      } else {
        const depacketizer = new DepacketizeCallback(t.codec);
        source.pipe(time.input);
        time.pipe(depacketizer.input);
        depacketizer.pipe(webm.inputAudio);
      }
      let sawKeyframe = t.kind !== 'video';
      const sink: RtpSink = (rtp, keyframe) => {
        // Until its first keyframe the file has no video: keep asking (the track throttles
        // it), since the request made when attaching can be lost or fall inside the
        // throttle of another subscriber's request.
        if (!sawKeyframe) {
          sawKeyframe = keyframe;
          if (!keyframe) t.track.requestKeyframe();
        }
        // The file's time starts with its first media, not when it was opened.
        this.lastPacketAt = Date.now();
        if (this.firstPacketAt === undefined) {
          this.firstPacketAt = this.lastPacketAt;
          this.info.startedAt = new Date(this.firstPacketAt).toISOString();
        }
        this.guard(() => source.input(rtp));
      };
      t.track.addSink(sink);
      this.attached.push({ track: t.track, sink });
      this.sources.push(source);
    }
  }

  /**
   * Runs a step of werift's RTP → WebM pipeline, which throws on some packet timings (a
   * publisher's timestamps running backwards made its cue writer throw at the end): the
   * file then ends where it could, and neither the forwarding of that packet nor the stop
   * request fails with it.
   */
  private guard(step: () => void): void {
    try {
      step();
    } catch (err) {
      if (!this.writerFailed) this.log.warn({ file: this.info.file, err: (err as Error).message }, 'recording writer failed; the file may be incomplete');
      this.writerFailed = true;
    }
  }

  /** Detaches from the tracks and closes the file so it plays. Idempotent. */
  stop(): Promise<RecordedFile> {
    this.stopping ??= (async () => {
      for (const { track, sink } of this.attached) track.removeSink(sink);
      for (const s of this.sources) this.guard(() => s.stop());
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((r) => {
        timer = setTimeout(() => {
          this.log.warn({ file: this.info.file }, 'recording did not finish in time');
          r();
        }, FINISH_TIMEOUT_MS);
      });
      await Promise.race([this.finished, timedOut]);
      clearTimeout(timer);
      this.info.endedAt = new Date(this.lastPacketAt ?? Date.now()).toISOString();
      this.info.bytes = await stat(this.path).then(
        (s) => s.size,
        () => 0,
      );
      return this.info;
    })();
    return this.stopping;
  }
}
