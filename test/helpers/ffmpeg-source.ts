import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { RtpPacket } from 'werift';

/**
 * Real, decodable media for server-side tests that need it (recordings): ffmpeg encodes a
 * test pattern (VP8) and a tone (Opus) and sends plain RTP to loopback ports; each packet
 * is handed to `onPacket` for a werift publisher to send on.
 */
export class FfmpegSource {
  private proc: ChildProcess | undefined;
  private readonly sockets: Socket[] = [];
  videoPackets = 0;
  audioPackets = 0;

  async start(onPacket: (kind: 'audio' | 'video', rtp: RtpPacket) => void, opts: { fps?: number } = {}): Promise<void> {
    const ports: number[] = [];
    for (const kind of ['video', 'audio'] as const) {
      const sock = createSocket('udp4');
      sock.on('message', (msg) => {
        if (kind === 'video') this.videoPackets++;
        else this.audioPackets++;
        onPacket(kind, RtpPacket.deSerialize(msg));
      });
      sock.bind(0, '127.0.0.1');
      await once(sock, 'listening');
      ports.push(sock.address().port);
      this.sockets.push(sock);
    }
    // Small and slow enough to leave the two cores to the SFU under test.
    const fps = opts.fps ?? 15;
    this.proc = spawn(
      'ffmpeg',
      [
        ...['-hide_banner', '-loglevel', 'error', '-re'],
        ...['-f', 'lavfi', '-i', `testsrc2=size=320x240:rate=${fps}`],
        ...['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'],
        ...['-map', '0:v', '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '300k', '-g', String(Math.round(fps / 2))],
        ...['-f', 'rtp', '-payload_type', '96', `rtp://127.0.0.1:${ports[0]}?pkt_size=1200`],
        ...['-map', '1:a', '-c:a', 'libopus', '-b:a', '48k', '-f', 'rtp', '-payload_type', '111', `rtp://127.0.0.1:${ports[1]}`],
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
  }

  /** Stops ffmpeg and closes the sockets. Idempotent. */
  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc !== undefined && proc.exitCode === null) {
      proc.kill('SIGTERM');
      await once(proc, 'exit');
    }
    for (const s of this.sockets.splice(0)) s.close();
  }
}
