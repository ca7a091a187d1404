import {
  RTCRtpCodecParameters,
  type RTCRtpHeaderExtensionParameters,
  useAbsSendTime,
  useFIR,
  useNACK,
  usePLI,
  useSdesMid,
  useTransportWideCC,
  useTWCC,
} from 'werift';
import type { CodecName } from '../config.ts';

/** Fixed payload types we offer; a publisher's offer may use others, werift maps them. */
const VIDEO_FEEDBACK = () => [useNACK(), usePLI(), useFIR(), useTWCC()];

const CODEC_FACTORIES: Record<CodecName, () => RTCRtpCodecParameters[]> = {
  opus: () => [
    new RTCRtpCodecParameters({
      mimeType: 'audio/opus',
      clockRate: 48000,
      channels: 2,
      payloadType: 111,
      parameters: 'minptime=10;useinbandfec=1',
      rtcpFeedback: [useTWCC()],
    }),
  ],
  vp8: () => [new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96, rtcpFeedback: VIDEO_FEEDBACK() })],
  vp9: () => [
    new RTCRtpCodecParameters({
      mimeType: 'video/VP9',
      clockRate: 90000,
      payloadType: 98,
      parameters: 'profile-id=0',
      rtcpFeedback: VIDEO_FEEDBACK(),
    }),
  ],
  h264: () => [
    new RTCRtpCodecParameters({
      mimeType: 'video/H264',
      clockRate: 90000,
      payloadType: 102,
      parameters: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
      rtcpFeedback: VIDEO_FEEDBACK(),
    }),
  ],
};

export interface MediaCodecs {
  audio: RTCRtpCodecParameters[];
  video: RTCRtpCodecParameters[];
}

export function codecsFor(names: readonly CodecName[]): MediaCodecs {
  const audio: RTCRtpCodecParameters[] = [];
  const video: RTCRtpCodecParameters[] = [];
  for (const name of names) {
    for (const c of CODEC_FACTORIES[name]()) (c.mimeType.startsWith('audio/') ? audio : video).push(c);
  }
  return { audio, video };
}

/**
 * Header extensions. transport-cc is what lets Chromium's send-side estimator grow its
 * uplink; the SFU answers it with its own feedback generator (see twcc-feedback.ts).
 */
export function headerExtensions(): { audio: RTCRtpHeaderExtensionParameters[]; video: RTCRtpHeaderExtensionParameters[] } {
  return {
    audio: [useSdesMid(), useTransportWideCC()],
    video: [useSdesMid(), useAbsSendTime(), useTransportWideCC()],
  };
}

/** A copy of a publisher's negotiated codec for a subscriber's transceiver, with our feedback set. */
export function subscriberCodec(published: RTCRtpCodecParameters): RTCRtpCodecParameters {
  const isVideo = published.mimeType.toLowerCase().startsWith('video/');
  return new RTCRtpCodecParameters({
    mimeType: published.mimeType,
    clockRate: published.clockRate,
    channels: published.channels,
    payloadType: published.payloadType,
    parameters: published.parameters,
    rtcpFeedback: isVideo ? [useNACK(), usePLI(), useFIR()] : [],
  });
}

export function codecNameOf(mimeType: string): string {
  return mimeType.split('/')[1]?.toLowerCase() ?? mimeType.toLowerCase();
}
