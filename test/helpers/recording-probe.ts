import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface ProbeStream {
  codec_name: string;
  codec_type: string;
  nb_read_frames?: string;
}

/** One recorded file as ffprobe reads it (every frame decoded), next to its metadata record. */
export interface ProbedRecording {
  /** The container's duration, s. */
  duration: number;
  /** endedAt - startedAt of the metadata record, s. */
  truth: number;
  /** The record's span, ms since the epoch. */
  from: number;
  to: number;
  /** Frames ffprobe decoded. */
  videoFrames: number;
  audioFrames: number;
}

/**
 * Reads a recorded file with `ffprobe -count_frames` and checks it holds one VP8 and one
 * Opus stream; the caller judges duration and frame counts against what it knows was sent.
 */
export async function probeRecording(path: string, record: { file: string; startedAt: string; endedAt: string }): Promise<ProbedRecording> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-count_frames', '-show_streams', '-show_format', '-of', 'json', path]);
  const probe = JSON.parse(stdout) as { streams: ProbeStream[]; format: { duration: string } };
  const video = probe.streams.find((s) => s.codec_type === 'video');
  const audio = probe.streams.find((s) => s.codec_type === 'audio');
  assert.equal(video?.codec_name, 'vp8', `${record.file}: ${JSON.stringify(probe.streams)}`);
  assert.equal(audio?.codec_name, 'opus', `${record.file}: ${JSON.stringify(probe.streams)}`);
  const from = Date.parse(record.startedAt);
  const to = Date.parse(record.endedAt);
  return {
    duration: Number(probe.format.duration),
    truth: (to - from) / 1000,
    from,
    to,
    videoFrames: Number(video!.nb_read_frames),
    audioFrames: Number(audio!.nb_read_frames),
  };
}
