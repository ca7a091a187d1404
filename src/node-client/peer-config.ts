import {
  RTCRtpCodecParameters,
  useAbsSendTime,
  useNACK,
  usePLI,
  useSdesMid,
  useTransportWideCC,
  useTWCC,
  type PeerConfig,
} from 'werift';

/** werift settings that keep ICE on 127.0.0.1 (inside a loopback-only namespace, or against a local server). */
export const LOOPBACK_ICE: Partial<PeerConfig> = {
  iceAdditionalHostAddresses: ['127.0.0.1'],
  iceUseIpv6: false,
  iceInterfaceAddresses: { udp4: '127.0.0.1' },
};

/**
 * werift codec parameters for a client of the service (the load tool's peers and the
 * tests'). H.264 uses another payload type than the server offers, so the server's
 * rewriting is exercised.
 */
export function codecParameters(name: 'vp8' | 'vp9' | 'h264' | 'opus'): RTCRtpCodecParameters {
  const videoFeedback = () => [useNACK(), usePLI(), useTWCC()];
  switch (name) {
    case 'vp8':
      return new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96, rtcpFeedback: videoFeedback() });
    case 'h264':
      return new RTCRtpCodecParameters({
        mimeType: 'video/H264',
        clockRate: 90000,
        payloadType: 97,
        parameters: 'profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1',
        rtcpFeedback: videoFeedback(),
      });
    case 'vp9':
      return new RTCRtpCodecParameters({
        mimeType: 'video/VP9',
        clockRate: 90000,
        payloadType: 98,
        parameters: 'profile-id=0',
        rtcpFeedback: videoFeedback(),
      });
    case 'opus':
      return new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111, rtcpFeedback: [useTWCC()] });
  }
}

/**
 * Publisher connection: VP8 + Opus, transport-cc (the server sends TWCC feedback on
 * publisher legs, as it does for browsers). Subscriber connection: what the server offers
 * subscribers (mid + abs-send-time, NACK and PLI). `pendingRtp: false` is relied on by the
 * synthetic sources (werift then clones each packet synchronously in `sendRtp`).
 */
export function peerConfig(role: 'publisher' | 'subscriber', ice: Partial<PeerConfig>): Partial<PeerConfig> {
  return {
    codecs: { audio: [codecParameters('opus')], video: [codecParameters('vp8')] },
    headerExtensions:
      role === 'publisher'
        ? { audio: [useSdesMid(), useTransportWideCC()], video: [useSdesMid(), useTransportWideCC()] }
        : { audio: [useSdesMid()], video: [useSdesMid(), useAbsSendTime()] },
    // One ICE transport per connection (max-compat leaks the per-m-line transports).
    bundlePolicy: 'max-bundle',
    pendingRtp: false,
    ...ice,
  };
}
