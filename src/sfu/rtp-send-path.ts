import type { RTCDtlsTransport } from 'werift';
import { SrtpEncryptor } from './srtp-encryptor.ts';
import { weriftDtls, type WeriftDtls, type WeriftSrtpContext } from './werift-adapter.ts';

/** One per subscriber DTLS transport, shared by its DownTracks. */
const paths = new WeakMap<RTCDtlsTransport, RtpSendPath>();

/**
 * The SFU's own last hop for forwarded RTP: SRTP with werift's negotiated keys (our
 * SrtpEncryptor) and a gathered `dgram` send straight on the UDP socket of the ICE
 * transport's nominated pair. werift's generic path (`sender.sendRtp` → `dispatchRtp` →
 * `dtlsTransport.sendRtp` → ICE `send` → `UdpTransport.send`) clones the packet, rebuilds
 * its header extensions, serializes through a bit writer, concatenates header, payload and
 * tag, and awaits three promises per packet; that was most of the per-packet cost.
 * A pair that is not plain UDP (TURN, ICE-TCP) gets one concatenated buffer through
 * werift's ICE `send`, which frames it for those transports. The werift fields it uses are
 * typed and checked in werift-adapter.ts (DownTrack checks them before its first send).
 */
export class RtpSendPath {
  private readonly dtls: WeriftDtls;
  private encryptor: SrtpEncryptor | undefined;
  /** The werift context the encryptor was made from: a new one (re-keyed DTLS) means new keys. */
  private keysFrom: WeriftSrtpContext | undefined;

  private constructor(dtls: RTCDtlsTransport) {
    this.dtls = weriftDtls(dtls);
  }

  static for(dtls: RTCDtlsTransport): RtpSendPath {
    let path = paths.get(dtls);
    if (path === undefined) {
      path = new RtpSendPath(dtls);
      paths.set(dtls, path);
    }
    return path;
  }

  /** SRTP for the current keys, or undefined before DTLS has produced them. */
  srtp(): SrtpEncryptor | undefined {
    const context = this.dtls.srtp?.localContext;
    if (context === undefined) return undefined;
    if (context !== this.keysFrom) {
      this.keysFrom = context;
      this.encryptor = new SrtpEncryptor({
        profile: context.profile,
        key: context.srtpSessionKey,
        salt: context.srtpSessionSalt,
        authKey: context.srtpSessionAuthTag,
      });
    }
    return this.encryptor;
  }

  /**
   * Sends one SRTP packet given as its pieces. False when the transport cannot send now
   * (DTLS not connected, no nominated pair, ICE consent expired): the packet is not sent.
   */
  send(pieces: Buffer[], length: number): boolean {
    const dtls = this.dtls;
    if (dtls.state !== 'connected') return false;
    const connection = dtls.iceTransport.connection;
    const pair = connection.nominated;
    if (pair === undefined || !connection.canSendApplicationData()) return false;
    const transport = pair.protocol.transport;
    if (pair.protocol.type === 'stun' && transport?.type === 'udp' && transport.socket !== undefined) {
      if (transport.closed === true) return false;
      transport.socket.send(pieces, pair.remoteAddr[1], pair.remoteAddr[0]);
      // werift's candidate-pair statistics, which its ICE send would have kept.
      pair.packetsSent++;
      pair.bytesSent += length;
    } else {
      connection.send(Buffer.concat(pieces, length)).catch(() => {});
    }
    dtls.packetsSent++;
    dtls.bytesSent += length;
    return true;
  }
}
