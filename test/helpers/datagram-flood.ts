/**
 * Hostile datagrams for the media plane (issue 8): what an attacker on the same host can
 * send to a server's ICE ports without knowing any key. Run as a script it floods the
 * targets given as JSON in argv[2] from many source addresses (127.x.y.z: all of 127/8 is
 * on `lo`) and prints one JSON line of counts; a test spawns it so that sending costs the
 * test's own peers no event-loop time.
 *
 * Classes:
 *   close_notify  the 15-byte plaintext DTLS alert of the issue
 *   client_hello  a plaintext DTLS 1.2 ClientHello (use_srtp, ECDHE-*-AES128-GCM)
 *   stun_forged   Binding request with the right USERNAME and FINGERPRINT, wrong MESSAGE-INTEGRITY,
 *                 USE-CANDIDATE, each source address new to the server
 *   dtls_fragment handshake fragments of messages that never complete
 *   rtp, rtcp, stun, dtls  random bytes that pass each class's first-byte test
 *   empty         zero-length datagrams
 *   jumbo         65,507-byte datagrams (the largest UDP payload over IPv4), first byte of any class
 */
import { randomBytes, randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { crc32 } from 'node:zlib';

export interface FloodTarget {
  host: string;
  port: number;
  /** The server's ICE ufrag for this port, and the legitimate client's (STUN USERNAME is "server:client"). */
  serverUfrag?: string;
  clientUfrag?: string;
}

export const DATAGRAM_CLASSES = [
  'close_notify',
  'client_hello',
  'stun_forged',
  'dtls_fragment',
  'rtp',
  'rtcp',
  'stun',
  'dtls',
  'empty',
  'jumbo',
] as const;
export type DatagramClass = (typeof DATAGRAM_CLASSES)[number];

/** Share of each class in a flood (weights, not percentages). */
const WEIGHTS: Record<DatagramClass, number> = {
  close_notify: 10,
  client_hello: 10,
  stun_forged: 30,
  dtls_fragment: 15,
  rtp: 10,
  rtcp: 10,
  stun: 5,
  dtls: 5,
  empty: 4,
  jumbo: 1,
};

export const CLOSE_NOTIFY = Buffer.from('15fefd000000000000000000020100', 'hex');

const MAX_UDP_PAYLOAD = 65_507;
const STUN_MAGIC = 0x2112a442;

function dtlsRecord(contentType: number, epoch: number, seq: number, body: Buffer): Buffer {
  const h = Buffer.alloc(13);
  h[0] = contentType;
  h.writeUInt16BE(0xfefd, 1);
  h.writeUInt16BE(epoch, 3);
  h.writeUIntBE(seq, 5, 6);
  h.writeUInt16BE(body.length, 11);
  return Buffer.concat([h, body]);
}

function handshake(type: number, messageSeq: number, totalLength: number, fragmentOffset: number, fragment: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h[0] = type;
  h.writeUIntBE(totalLength, 1, 3);
  h.writeUInt16BE(messageSeq, 4);
  h.writeUIntBE(fragmentOffset, 6, 3);
  h.writeUIntBE(fragment.length, 9, 3);
  return Buffer.concat([h, fragment]);
}

export function clientHello(): Buffer {
  const ext = (type: number, data: Buffer) => {
    const h = Buffer.alloc(4);
    h.writeUInt16BE(type, 0);
    h.writeUInt16BE(data.length, 2);
    return Buffer.concat([h, data]);
  };
  const extensions = Buffer.concat([
    ext(0x000a, Buffer.from('000400170018', 'hex')), // supported_groups: P-256, P-384
    ext(0x000b, Buffer.from('0100', 'hex')), // ec_point_formats: uncompressed
    ext(0x000d, Buffer.from('000404030401', 'hex')), // signature_algorithms
    ext(0x000e, Buffer.from('0002000100', 'hex')), // use_srtp: AES128_CM_SHA1_80, no MKI
    ext(0x0017, Buffer.alloc(0)), // extended_master_secret
  ]);
  const extLen = Buffer.alloc(2);
  extLen.writeUInt16BE(extensions.length);
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]),
    randomBytes(32),
    Buffer.from([0x00]), // session_id
    Buffer.from([0x00]), // cookie
    Buffer.from('0004c02bc02f', 'hex'), // cipher suites
    Buffer.from([0x01, 0x00]), // compression: null
    extLen,
    extensions,
  ]);
  return dtlsRecord(22, 0, randomInt(0, 2 ** 32), handshake(1, 0, body.length, 0, body));
}

/** A fragment of a large handshake message (ClientHello or Certificate) that never completes. */
export function dtlsFragment(): Buffer {
  const total = randomInt(8_000, 0x1000000);
  const length = randomInt(200, 1_200);
  const offset = randomInt(1, total - length);
  return dtlsRecord(22, 0, randomInt(0, 2 ** 32), handshake(randomInt(0, 2) === 0 ? 1 : 11, randomInt(0, 8), total, offset, randomBytes(length)));
}

function stunAttr(type: number, value: Buffer): Buffer {
  const pad = (4 - (value.length % 4)) % 4;
  const h = Buffer.alloc(4);
  h.writeUInt16BE(type, 0);
  h.writeUInt16BE(value.length, 2);
  return Buffer.concat([h, value, Buffer.alloc(pad)]);
}

/** A Binding request that names a real session but whose MESSAGE-INTEGRITY is random; its FINGERPRINT is right. */
export function forgedStun(username: string): Buffer {
  const priority = Buffer.alloc(4);
  priority.writeUInt32BE(0x6e7f1eff);
  const attrs = Buffer.concat([
    stunAttr(0x0006, Buffer.from(username)),
    stunAttr(0x0024, priority),
    stunAttr(0x802a, randomBytes(8)), // ICE-CONTROLLING
    stunAttr(0x0025, Buffer.alloc(0)), // USE-CANDIDATE
    stunAttr(0x0008, randomBytes(20)), // MESSAGE-INTEGRITY: wrong
  ]);
  const header = Buffer.alloc(20);
  header.writeUInt16BE(0x0001, 0);
  header.writeUInt16BE(attrs.length + 8, 2);
  header.writeUInt32BE(STUN_MAGIC, 4);
  randomBytes(12).copy(header, 8);
  const signed = Buffer.concat([header, attrs]);
  const fp = Buffer.alloc(4);
  fp.writeUInt32BE((crc32(signed) ^ 0x5354554e) >>> 0);
  return Buffer.concat([signed, stunAttr(0x8028, fp)]);
}

/** Random bytes of `length` (≥ 2) whose first bytes pass `cls`'s demultiplexing test (RFC 7983). */
export function junk(cls: 'rtp' | 'rtcp' | 'stun' | 'dtls', length: number): Buffer {
  const b = randomBytes(length);
  switch (cls) {
    case 'rtp':
      b[0] = 0x80 | (b[0]! & 0x3f);
      if (b[1]! >= 192 && b[1]! <= 223) b[1] = b[1]! & 0x7f;
      break;
    case 'rtcp':
      b[0] = 0x80 | (b[0]! & 0x3f);
      b[1] = randomInt(192, 209);
      break;
    case 'stun':
      b[0] = b[0]! & 0x01;
      if (length >= 8) b.writeUInt32BE(STUN_MAGIC, 4);
      if (length >= 4) b.writeUInt16BE(Math.max(0, length - 20) & 0xfffc, 2);
      break;
    case 'dtls':
      b[0] = randomInt(20, 64);
      if (length >= 3 && randomInt(0, 2) === 0) b.writeUInt16BE(0xfefd, 1);
      break;
  }
  return b;
}

const JUMBO = randomBytes(MAX_UDP_PAYLOAD);
const JUMBO_FIRST_BYTES = [0x00, 0x16, 0x15, 0x80, 0x81, 0xbf];

/** One datagram of `cls` for `target`. */
export function datagram(cls: DatagramClass, target: FloodTarget): Buffer {
  switch (cls) {
    case 'close_notify':
      return CLOSE_NOTIFY;
    case 'client_hello':
      return clientHello();
    case 'stun_forged':
      return forgedStun(`${target.serverUfrag ?? randomBytes(4).toString('hex')}:${target.clientUfrag ?? randomBytes(4).toString('hex')}`);
    case 'dtls_fragment':
      return dtlsFragment();
    case 'rtp':
    case 'rtcp':
    case 'stun':
    case 'dtls':
      return junk(cls, randomInt(2, 1_500));
    case 'empty':
      return Buffer.alloc(0);
    case 'jumbo':
      JUMBO[0] = JUMBO_FIRST_BYTES[randomInt(0, JUMBO_FIRST_BYTES.length)]!;
      if (JUMBO[0] >= 0x80) JUMBO[1] = randomInt(0, 256);
      return JUMBO;
  }
}

export interface FloodOptions {
  targets: FloodTarget[];
  total: number;
  /** Datagrams per second. */
  rate: number;
  /** How many source sockets (each on its own 127.x.y.z address) exist at once. */
  openSources?: number;
  /** Datagrams each source sends before it is closed and replaced by one on a new address. */
  perSource?: number;
  /** Index of the first source address (`sourceAddress`), so two floods can use different ones. */
  firstSource?: number;
  /** Only these classes (default: all, weighted). */
  classes?: DatagramClass[];
}

export interface FloodResult {
  sent: number;
  sendErrors: number;
  byClass: Record<DatagramClass, number>;
  sourceAddresses: number;
  durationMs: number;
  rate: number;
}

/** The n-th source address: 127.1.0.1 upwards, never 127.0.0.x where the real peers are. */
function sourceAddress(n: number): string {
  const a = 1 + Math.floor(n / 65_024);
  const rest = n % 65_024;
  return `127.${a}.${Math.floor(rest / 254)}.${1 + (rest % 254)}`;
}

async function openSource(n: number): Promise<Socket> {
  const s = createSocket('udp4');
  s.on('error', () => {});
  s.bind(0, sourceAddress(n));
  await once(s, 'listening');
  return s;
}

export async function flood(opts: FloodOptions): Promise<FloodResult> {
  const openSources = opts.openSources ?? 200;
  const perSource = opts.perSource ?? 40;
  const schedule: DatagramClass[] = [];
  for (const cls of opts.classes ?? DATAGRAM_CLASSES) for (let i = 0; i < WEIGHTS[cls]; i++) schedule.push(cls);
  const byClass = Object.fromEntries(DATAGRAM_CLASSES.map((c) => [c, 0])) as Record<DatagramClass, number>;
  let nextSource = opts.firstSource ?? 0;
  const pool: { socket: Socket; used: number }[] = [];
  for (let i = 0; i < openSources; i++) pool.push({ socket: await openSource(nextSource++), used: 0 });
  let sent = 0;
  let sendErrors = 0;
  const start = performance.now();
  const tickMs = 10;
  while (sent < opts.total) {
    const due = Math.min(opts.total, Math.ceil(((performance.now() - start) / 1000) * opts.rate));
    for (; sent < due; sent++) {
      const slot = pool[sent % pool.length]!;
      const cls = schedule[randomInt(0, schedule.length)]!;
      const target = opts.targets[sent % opts.targets.length]!;
      slot.socket.send(datagram(cls, target), target.port, target.host, (err) => {
        if (err) sendErrors++;
      });
      byClass[cls]++;
      if (++slot.used >= perSource) {
        const old = slot.socket;
        setTimeout(() => old.close(), 200);
        slot.socket = await openSource(nextSource++);
        slot.used = 0;
      }
    }
    await new Promise((r) => setTimeout(r, tickMs));
  }
  const durationMs = performance.now() - start;
  await new Promise((r) => setTimeout(r, 250));
  for (const { socket } of pool) socket.close();
  return { sent, sendErrors, byClass, sourceAddresses: nextSource, durationMs: Math.round(durationMs), rate: Math.round(sent / (durationMs / 1000)) };
}

if (import.meta.main) {
  const opts = JSON.parse(process.argv[2] ?? '{}') as FloodOptions;
  const result = await flood(opts);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
