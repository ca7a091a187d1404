/**
 * Every use of werift beside its public API, in one place (docs/werift.md, "The adapter").
 * The SFU sends forwarded RTP itself with werift's negotiated SRTP keys on werift's ICE
 * socket, keeps werift's sender counters for its sender reports, and puts our own TWCC
 * feedback into werift's receiver hook. None of those fields are in werift's typings, so a
 * werift upgrade that renames one would compile and then silently drop every packet. Each
 * field is typed here once, and its shape is checked once per connected transport (the
 * `check*` functions): a mismatch is an error log naming what is missing, a count in
 * `scv_werift_adapter_failures_total`, and the transport closed (`failTransport`).
 */
import type { Socket } from 'node:dgram';
import type { RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender, RtcpPacket } from 'werift';
import { createLogger, type Logger } from '../common/logger.ts';
import type { MediaStats } from './media-stats.ts';

/** The werift this adapter was written against and checked on. */
export const WERIFT_VERSION = '0.25.2';

/** One direction's SRTP session keys, as werift derived them after DTLS (`dtls.srtp.localContext`). */
export interface WeriftSrtpContext {
  profile: number;
  srtpSessionKey: Buffer;
  srtpSessionSalt: Buffer;
  srtpSessionAuthTag: Buffer;
}

export interface WeriftCandidatePair {
  protocol: { type: string; transport?: { type: string; closed?: boolean; socket?: Socket } };
  remoteAddr: [string, number];
  packetsSent: number;
  bytesSent: number;
}

export interface WeriftIceConnection {
  nominated: WeriftCandidatePair | undefined;
  canSendApplicationData(): boolean;
  send(data: Buffer): Promise<void>;
}

/** What the send path reads and keeps up to date of a werift `RTCDtlsTransport`. */
export interface WeriftDtls {
  state: string;
  srtp: { localContext: WeriftSrtpContext } | undefined;
  iceTransport: { connection: WeriftIceConnection };
  bytesSent: number;
  packetsSent: number;
  /** The transport-wide sequence number werift's senders count on. */
  transportSequenceNumber: number;
}

/** What a DownTrack reads and keeps up to date of a werift `RTCRtpSender` (for its sender reports and stats). */
export interface WeriftSender {
  ssrc: number;
  stopped: boolean;
  codec: { payloadType: number } | undefined;
  mid: string | undefined;
  headerExtensions: { id: number; uri: string }[];
  dtlsTransport: WeriftDtls | undefined;
  ntpTimestamp: bigint;
  rtpTimestamp: number;
  octetCount: number;
  packetCount: number;
  headerBytesSent: number;
  retransmittedPacketsSent: number;
  retransmittedBytesSent: number;
  runRtcp(): Promise<void>;
}

/** werift's receiver TWCC hook: it calls `setupTWCC(ssrc)` once, then `receiverTWCC.handleTWCC(seq)` per packet. */
interface WeriftReceiver {
  setupTWCC: (ssrc: number) => void;
  receiverTWCC: unknown;
  twccEnabled: unknown;
}

/** Our transport-wide congestion control feedback (TwccFeedback), as the hook drives it. */
export interface TwccSink {
  setMediaSsrc(ssrc: number): void;
  handleTWCC(seq: number): void;
}

export const weriftDtls = (dtls: RTCDtlsTransport): WeriftDtls => dtls as unknown as WeriftDtls;
export const weriftSender = (sender: RTCRtpSender): WeriftSender => sender as unknown as WeriftSender;
const weriftReceiver = (receiver: RTCRtpReceiver): WeriftReceiver => receiver as unknown as WeriftReceiver;

/** werift surfaces FIR only as a raw payload-specific feedback packet (PT 206, FMT 4). */
export function isFir(packet: RtcpPacket): boolean {
  return packet.type === 206 && (packet as { feedback?: { count?: number } }).feedback?.count === 4;
}

/** Sends an RTCP datagram we built ourselves through werift's SRTCP (it only calls `serialize()`). */
export async function sendRawRtcp(dtls: RTCDtlsTransport, datagram: Buffer): Promise<void> {
  await dtls.sendRtcp([{ serialize: () => datagram } as never]);
}

// ---- checks ---------------------------------------------------------------------------

type Shape = 'number' | 'string' | 'boolean' | 'bigint' | 'function' | 'object' | 'buffer' | 'array';

function is(value: unknown, shape: Shape): boolean {
  if (shape === 'buffer') return Buffer.isBuffer(value);
  if (shape === 'array') return Array.isArray(value);
  if (shape === 'object') return typeof value === 'object' && value !== null;
  return typeof value === shape;
}

/** Appends `path: expected <shape>, got <what>` for each field of `obj` that is not of its shape. */
function expect(problems: string[], obj: unknown, path: string, fields: Record<string, Shape>): void {
  for (const [name, shape] of Object.entries(fields)) {
    const value = is(obj, 'object') ? (obj as Record<string, unknown>)[name] : undefined;
    if (!is(value, shape)) problems.push(`${path}.${name}: expected ${shape}, got ${value === null ? 'null' : typeof value}`);
  }
}

/** Results per DTLS transport: the fields do not change after it connected. */
const dtlsChecked = new WeakMap<RTCDtlsTransport, readonly string[]>();

/**
 * What the send path needs of a connected DTLS transport and is not there (empty: all is).
 * Checked once per transport, the first time it is asked after DTLS connected.
 */
export function checkDtls(dtls: RTCDtlsTransport): readonly string[] {
  const cached = dtlsChecked.get(dtls);
  if (cached !== undefined) return cached;
  const d = weriftDtls(dtls);
  const problems: string[] = [];
  expect(problems, d, 'dtlsTransport', { state: 'string', srtp: 'object', iceTransport: 'object', bytesSent: 'number', packetsSent: 'number', transportSequenceNumber: 'number' });
  expect(problems, d.srtp, 'dtlsTransport.srtp', { localContext: 'object' });
  const context = d.srtp?.localContext;
  expect(problems, context, 'dtlsTransport.srtp.localContext', { profile: 'number', srtpSessionKey: 'buffer', srtpSessionSalt: 'buffer', srtpSessionAuthTag: 'buffer' });
  expect(problems, d.iceTransport, 'dtlsTransport.iceTransport', { connection: 'object' });
  const connection = d.iceTransport?.connection;
  expect(problems, connection, 'iceTransport.connection', { canSendApplicationData: 'function', send: 'function' });
  if (is(connection, 'object') && !('nominated' in connection)) problems.push('iceTransport.connection.nominated: missing');
  // The nominated pair, once there is one (the send path sends nothing before).
  const pair = connection?.nominated;
  if (pair !== undefined) {
    expect(problems, pair, 'connection.nominated', { protocol: 'object', remoteAddr: 'array', packetsSent: 'number', bytesSent: 'number' });
    expect(problems, pair.protocol, 'nominated.protocol', { type: 'string' });
    const transport = pair.protocol?.transport;
    // A plain UDP pair is sent on directly; any other goes through werift's ICE send (checked above).
    if (pair.protocol?.type === 'stun' && transport?.type === 'udp') expect(problems, transport.socket, 'nominated.protocol.transport.socket', { send: 'function' });
  }
  if (dtls.state === 'connected') dtlsChecked.set(dtls, problems);
  return problems;
}

/** What a DownTrack needs of its werift sender and is not there (empty: all is). */
export function checkSender(sender: RTCRtpSender): string[] {
  const s = weriftSender(sender);
  const problems: string[] = [];
  expect(problems, s, 'sender', {
    ssrc: 'number',
    stopped: 'boolean',
    headerExtensions: 'array',
    ntpTimestamp: 'bigint',
    rtpTimestamp: 'number',
    octetCount: 'number',
    packetCount: 'number',
    headerBytesSent: 'number',
    retransmittedPacketsSent: 'number',
    retransmittedBytesSent: 'number',
    runRtcp: 'function',
  });
  // Both are undefined until negotiated, but must be werift's own fields.
  for (const name of ['codec', 'mid'] as const) if (!(name in s)) problems.push(`sender.${name}: missing`);
  if (s.codec !== undefined) expect(problems, s.codec, 'sender.codec', { payloadType: 'number' });
  for (const e of Array.isArray(s.headerExtensions) ? s.headerExtensions : []) expect(problems, e, 'sender.headerExtensions[]', { id: 'number', uri: 'string' });
  return problems;
}

/** The feedback objects our hook put into werift's receivers. */
const ourTwcc = new WeakSet<object>();
/** Receivers our hook was installed on. */
const hooked = new WeakSet<RTCRtpReceiver>();
/** Receivers whose hook could not be installed, with why. */
const notHooked = new WeakMap<RTCRtpReceiver, string[]>();

/**
 * Makes werift's receiver feed our TwccFeedback instead of building its own (malformed)
 * feedback: werift calls `setupTWCC(ssrc)` at the first packet of a transport-cc stream and
 * then `receiverTWCC.handleTWCC(seq)` for each packet. Whether it took is checked at the
 * first packet (`checkReceiver`).
 */
export function installTwcc(receiver: RTCRtpReceiver, twcc: TwccSink): void {
  const r = weriftReceiver(receiver);
  const problems: string[] = [];
  expect(problems, r, 'receiver', { setupTWCC: 'function' });
  if (!('receiverTWCC' in r)) problems.push('receiver.receiverTWCC: missing');
  if (!('twccEnabled' in r)) problems.push('receiver.twccEnabled: missing');
  if (problems.length > 0) {
    notHooked.set(receiver, problems);
    return;
  }
  hooked.add(receiver);
  r.setupTWCC = (ssrc: number) => {
    twcc.setMediaSsrc(ssrc);
    const feedback = {
      twccRunning: true,
      handleTWCC: (seq: number | undefined) => {
        if (seq !== undefined) twcc.handleTWCC(seq);
      },
    };
    ourTwcc.add(feedback);
    r.receiverTWCC = feedback;
  };
}

/**
 * Run at the receiving track's first packet (werift has run its TWCC setup for it by then):
 * what is wrong with the TWCC hook (empty: nothing). A receiver the hook was never meant for
 * (a transport that gives no TWCC feedback) has nothing to check.
 */
export function checkReceiver(receiver: RTCRtpReceiver): readonly string[] {
  const missing = notHooked.get(receiver);
  if (missing !== undefined) return missing;
  if (!hooked.has(receiver)) return [];
  const r = weriftReceiver(receiver);
  if (r.twccEnabled && !(is(r.receiverTWCC, 'object') && ourTwcc.has(r.receiverTWCC as object))) {
    return ['receiver.setupTWCC: transport-cc is negotiated but werift did not call our hook (receiverTWCC is not ours)'];
  }
  return [];
}

// ---- failing loudly ---------------------------------------------------------------------

let fallback: Logger | undefined;
/** For callers given no logger: failures are logged anyway. */
export function fallbackLogger(): Logger {
  fallback ??= createLogger('error').child({ component: 'werift-adapter' });
  return fallback;
}

/**
 * The transport cannot work with this werift: says what is missing, counts it, and closes
 * the DTLS transport (RtcTransport then reports the connection failed and its participant
 * leaves with `connection_failed`), instead of dropping every packet without a word.
 */
export function failTransport(dtls: RTCDtlsTransport | undefined, what: string, problems: readonly string[], log: Logger, stats: MediaStats): void {
  log.error({ problems, werift: WERIFT_VERSION }, `werift adapter: ${what} is not what werift ${WERIFT_VERSION} had (see docs/werift.md); closing the transport`);
  stats.weriftAdapterFailures++;
  dtls?.stop().catch(() => {});
}
