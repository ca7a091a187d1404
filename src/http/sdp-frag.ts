import { AppError } from '../common/errors.ts';
import { SdpSize } from '../common/limits.ts';
import { CANDIDATE_LINE } from '../sfu/sdp.ts';
import { parse } from './validate.ts';

/** The media type of a trickle fragment (RFC 8840), the body of a WHIP/WHEP PATCH. */
export const SDPFRAG_TYPE = 'application/trickle-ice-sdpfrag';

/** What an `application/trickle-ice-sdpfrag` body carries that we act on. */
export interface SdpFrag {
  ufrag: string | undefined;
  pwd: string | undefined;
  /** Candidate attributes without `a=` (`candidate:…`), in the order sent. */
  candidates: string[];
  endOfCandidates: boolean;
}

/**
 * Reads a trickle fragment. Over the SDP size limit is SDP_TOO_LARGE; a line that is no
 * SDP line is BAD_REQUEST, an `a=candidate:` that is no candidate INVALID_CANDIDATE.
 * `m=`, `a=mid:`, `a=ice-options:` and any other SDP line are ignored: everything is
 * bundled on one transport, so which m-line a candidate names does not matter.
 */
export function parseSdpFrag(body: string): SdpFrag {
  parse(SdpSize, body);
  const frag: SdpFrag = { ufrag: undefined, pwd: undefined, candidates: [], endOfCandidates: false };
  for (const raw of body.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('a=ice-ufrag:')) frag.ufrag = line.slice(12);
    else if (line.startsWith('a=ice-pwd:')) frag.pwd = line.slice(10);
    else if (line === 'a=end-of-candidates') frag.endOfCandidates = true;
    else if (line.startsWith('a=candidate:')) {
      if (!CANDIDATE_LINE.test(line)) throw new AppError('INVALID_CANDIDATE', `not a valid candidate line: ${line.slice(0, 120)}`);
      frag.candidates.push(line.slice(2));
    } else if (!/^[a-z]=/.test(line)) {
      throw new AppError('BAD_REQUEST', `not an SDP fragment line: ${line.slice(0, 120)}`);
    }
  }
  return frag;
}
