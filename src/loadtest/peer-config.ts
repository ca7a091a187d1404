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

const vp8 = () =>
  new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96, rtcpFeedback: [useNACK(), usePLI(), useTWCC()] });
const opus = () => new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111, rtcpFeedback: [useTWCC()] });

/**
 * Publisher connection: VP8 + Opus, transport-cc (the server sends TWCC feedback on
 * publisher legs, as it does for browsers). Subscriber connection: what the server offers
 * subscribers (mid + abs-send-time, NACK and PLI). `pendingRtp: false` is relied on by the
 * synthetic sources (werift then clones each packet synchronously in `sendRtp`).
 */
export function peerConfig(role: 'publisher' | 'subscriber', ice: Partial<PeerConfig>): Partial<PeerConfig> {
  return {
    codecs: { audio: [opus()], video: [vp8()] },
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
