import { AppError } from '../common/errors.ts';

export type Direction = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';

export interface MediaSection {
  kind: string;
  mid: string | undefined;
  direction: Direction;
  /** Port 0 (and not a bundle-only member of a BUNDLE group): the m-line is rejected or stopped. */
  stopped: boolean;
}

/**
 * The m-sections of an SDP, enough to know what a remote offers to send and receive.
 * RFC 8843 §6: a port-0 section with `a=bundle-only` inside a BUNDLE group that has a
 * section with a port is bundled, not stopped (GStreamer webrtcbin's max-bundle offers).
 */
export function mediaSections(sdp: string): MediaSection[] {
  const out: MediaSection[] = [];
  const bundleGroups: string[][] = [];
  const bundleOnly = new Set<MediaSection>();
  let cur: MediaSection | undefined;
  for (const raw of sdp.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      const [kind, port] = line.slice(2).split(' ');
      cur = { kind: kind ?? '', mid: undefined, direction: 'sendrecv', stopped: port === '0' };
      out.push(cur);
    } else if (cur === undefined) {
      if (line.startsWith('a=group:BUNDLE')) bundleGroups.push(line.slice(14).trim().split(/\s+/));
    } else if (line.startsWith('a=mid:')) cur.mid = line.slice(6);
    else if (line === 'a=bundle-only') bundleOnly.add(cur);
    else if (line === 'a=sendrecv' || line === 'a=sendonly' || line === 'a=recvonly' || line === 'a=inactive') {
      cur.direction = line.slice(2) as Direction;
    }
  }
  // Linear in the SDP's size: hostile SDPs may carry thousands of sections and mids.
  const byMid = new Map(out.filter((s) => s.mid !== undefined).map((s) => [s.mid, s]));
  for (const mids of bundleGroups) {
    const members = mids.map((mid) => byMid.get(mid)).filter((s) => s !== undefined);
    if (!members.some((s) => !s.stopped)) continue;
    for (const s of members) if (bundleOnly.has(s)) s.stopped = false;
  }
  return out;
}

/** How many `m=` lines an SDP has, counting no further than `max + 1` (a hostile SDP may have thousands). */
function countSections(sdp: string, max: number): number {
  let n = sdp.startsWith('m=') ? 1 : 0;
  for (let i = sdp.indexOf('\nm='); i !== -1 && n <= max; i = sdp.indexOf('\nm=', i + 3)) n++;
  return n;
}

/**
 * Cheap structural checks before werift sees an SDP, so garbage gets INVALID_SDP, not a
 * stack trace. `maxSections` is `Config['rtc'].maxMediaSections` (it follows the room limit);
 * an SDP over it is refused before its sections are parsed.
 */
export function assertPlausibleSdp(sdp: string, maxSections: number): MediaSection[] {
  if (!sdp.startsWith('v=0')) throw new AppError('INVALID_SDP', 'SDP must start with "v=0"');
  if (!/\r?\na=fingerprint:/.test(sdp)) throw new AppError('INVALID_SDP', 'SDP has no DTLS fingerprint');
  if (!/\r?\na=ice-ufrag:/.test(sdp) || !/\r?\na=ice-pwd:/.test(sdp)) throw new AppError('INVALID_SDP', 'SDP has no ICE credentials');
  if (countSections(sdp, maxSections) > maxSections) throw new AppError('INVALID_SDP', `SDP has too many media sections (at most ${maxSections})`);
  const sections = mediaSections(sdp);
  if (sections.length === 0) throw new AppError('INVALID_SDP', 'SDP has no media section');
  for (const s of sections) {
    if (s.kind !== 'audio' && s.kind !== 'video' && s.kind !== 'application') {
      throw new AppError('INVALID_SDP', `unsupported media kind "${s.kind}"`);
    }
  }
  return sections;
}

/**
 * An answer must be an answer (RFC 3264 §6, RFC 5763 §5): no `a=setup:actpass` (that is an
 * offer's DTLS role; accepted as an answer, both ends wait for the other to start DTLS and
 * the connection freezes), and the offer's m-sections, same kinds in the same order.
 */
export function assertAnswerTo(answerSdp: string, offerSdp: string | undefined): void {
  if (/^a=setup:actpass\s*$/m.test(answerSdp)) {
    throw new AppError('INVALID_SDP', 'this SDP is an offer (a=setup:actpass), not an answer: apply the server\'s offer and send what createAnswer() returns');
  }
  if (offerSdp === undefined) return;
  const offered = mediaSections(offerSdp);
  const answered = mediaSections(answerSdp);
  if (answered.length !== offered.length || answered.some((s, i) => s.kind !== offered[i]!.kind)) {
    throw new AppError('INVALID_SDP', `an answer must have the offer's ${offered.length} media sections in order; this SDP has ${answered.length} (${answered.map((s) => s.kind).join(', ')})`);
  }
  // RFC 8843 §7.3 keeps each mid, RFC 3264 §6.1 allows only the offer's direction reversed
  // (or inactive): an answer that fails this was made for another offer.
  offered.forEach((o, i) => {
    const a = answered[i]!;
    if (o.mid !== undefined && a.mid !== undefined && a.mid !== o.mid) {
      throw new AppError('INVALID_SDP', `answer section ${i} has mid "${a.mid}", the offer's has "${o.mid}"`);
    }
    if (!o.stopped && !a.stopped && !directionAnswers(o.direction, a.direction)) {
      throw new AppError('INVALID_SDP', `answer section ${i} (mid ${o.mid}) is ${a.direction}, which cannot answer ${o.direction}`);
    }
  });
}

function directionAnswers(offered: Direction, answered: Direction): boolean {
  if (answered === 'inactive' || offered === 'sendrecv') return true;
  if (offered === 'sendonly') return answered === 'recvonly';
  if (offered === 'recvonly') return answered === 'sendonly';
  return false;
}

/** `candidate:<foundation> <component> <udp|tcp> <priority> <address> <port> typ <type> …`, with or without `a=`. */
export const CANDIDATE_LINE = /^(a=)?candidate:\S+ \d+ (udp|tcp) \d+ \S+ \d+ typ \w+/i;

export function sends(d: Direction): boolean {
  return d === 'sendrecv' || d === 'sendonly';
}

export function receives(d: Direction): boolean {
  return d === 'sendrecv' || d === 'recvonly';
}

/** Replaces the address of host candidates (except loopback) with the announced one. */
export function announceCandidate(candidate: string, announcedIp: string | undefined): string {
  if (announcedIp === undefined) return candidate;
  const parts = candidate.split(' ');
  // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
  if (parts.length < 8 || parts[7] !== 'host' || parts[4]?.startsWith('127.')) return candidate;
  parts[4] = announcedIp;
  return parts.join(' ');
}

export function announceSdp(sdp: string, announcedIp: string | undefined): string {
  if (announcedIp === undefined) return sdp;
  return sdp.replace(/^a=(candidate:.*)$/gm, (_m, c: string) => `a=${announceCandidate(c, announcedIp)}`);
}

/** The first ICE username fragment of an SDP (max-bundle: the one transport's), if any. */
export function firstUfrag(sdp: string): string | undefined {
  return /^a=ice-ufrag:(\S+)/m.exec(sdp)?.[1];
}
