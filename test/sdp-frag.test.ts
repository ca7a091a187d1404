import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AppError } from '../src/common/errors.ts';
import { MAX_SDP_BYTES } from '../src/common/limits.ts';
import { parseSdpFrag } from '../src/http/sdp-frag.ts';

const HOST = 'candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host';
const SRFLX = 'candidate:2 1 udp 1686052607 203.0.113.9 50000 typ srflx raddr 192.0.2.1 rport 61764';
const TCP = 'candidate:3 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active';

function refused(body: string, code: string, message?: RegExp): void {
  assert.throws(
    () => parseSdpFrag(body),
    (err: unknown) => {
      assert.ok(err instanceof AppError, `expected an AppError, got ${String(err)}`);
      assert.equal(err.code, code);
      if (message !== undefined) assert.match(err.message, message);
      return true;
    },
  );
}

test('a WHIP client fragment (RFC 9725 §4.3.1 example): credentials, the candidates in order, end of candidates', () => {
  const frag = parseSdpFrag(
    ['a=ice-options:trickle ice2', 'a=group:BUNDLE 0', 'm=audio 9 UDP/TLS/RTP/SAVPF 111', 'a=mid:0', 'a=ice-ufrag:EsAw', 'a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1', `a=${HOST}`, `a=${SRFLX}`, `a=${TCP}`, 'a=end-of-candidates', ''].join('\r\n'),
  );
  assert.deepEqual(frag, { ufrag: 'EsAw', pwd: 'P2uYro0UCOQ4zxjKXaWCBui1', candidates: [HOST, SRFLX, TCP], endOfCandidates: true });
});

test('a fragment of bare LF lines with surrounding blanks and no credentials', () => {
  const frag = parseSdpFrag(`\n  a=${HOST}  \n\n\ta=${SRFLX}\n`);
  assert.deepEqual(frag, { ufrag: undefined, pwd: undefined, candidates: [HOST, SRFLX], endOfCandidates: false });
});

test('end of candidates alone, and an empty body, carry nothing else', () => {
  assert.deepEqual(parseSdpFrag('a=end-of-candidates\r\n'), { ufrag: undefined, pwd: undefined, candidates: [], endOfCandidates: true });
  assert.deepEqual(parseSdpFrag(''), { ufrag: undefined, pwd: undefined, candidates: [], endOfCandidates: false });
});

test('an ICE restart fragment: new credentials, no candidates yet', () => {
  const frag = parseSdpFrag('a=ice-ufrag:n3w\r\na=ice-pwd:an0therpassw0rdthatislong\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n');
  assert.equal(frag.ufrag, 'n3w');
  assert.equal(frag.pwd, 'an0therpassw0rdthatislong');
  assert.deepEqual(frag.candidates, []);
});

test('other SDP lines are ignored, but a line that is no SDP line is refused', () => {
  assert.deepEqual(parseSdpFrag(`v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=${HOST}`).candidates, [HOST]);
  refused(`a=${HOST}\r\nhello world\r\n`, 'BAD_REQUEST', /not an SDP fragment line: hello world/);
  refused('<html><body>oops</body></html>', 'BAD_REQUEST');
  refused('A=candidate:1 1 udp 1 192.0.2.1 1 typ host', 'BAD_REQUEST');
  refused('{"candidate":"candidate:1 1 udp 1 192.0.2.1 1 typ host"}', 'BAD_REQUEST');
});

test('a candidate attribute that is no candidate is INVALID_CANDIDATE, with the line cut short in the message', () => {
  refused('a=candidate:garbage', 'INVALID_CANDIDATE', /not a valid candidate line: a=candidate:garbage/);
  refused('a=candidate:1 1 sctp 2122260223 192.0.2.1 61764 typ host', 'INVALID_CANDIDATE');
  refused('a=candidate:1 1 udp 2122260223 192.0.2.1 port typ host', 'INVALID_CANDIDATE');
  const long = `a=candidate:${'x'.repeat(5000)}`;
  assert.throws(
    () => parseSdpFrag(long),
    (err: unknown) => err instanceof AppError && err.code === 'INVALID_CANDIDATE' && err.message.length < 200,
  );
});

test('a fragment over the SDP size limit is SDP_TOO_LARGE before any line is read', () => {
  // Garbage after the limit would be BAD_REQUEST if it were read at all.
  const big = `a=${HOST}\r\n`.repeat(Math.ceil(MAX_SDP_BYTES / (HOST.length + 4)) + 1) + 'garbage';
  assert.ok(big.length > MAX_SDP_BYTES);
  refused(big, 'SDP_TOO_LARGE');
  // The limit counts UTF-8 bytes: under it in characters, over it in bytes.
  const wide = `a=ice-ufrag:${'€'.repeat(MAX_SDP_BYTES / 3)}`;
  assert.ok(wide.length < MAX_SDP_BYTES);
  refused(wide, 'SDP_TOO_LARGE');
  // Just under the limit: parsed.
  const fits = `a=ice-ufrag:${'u'.repeat(MAX_SDP_BYTES - 12)}`;
  assert.equal(parseSdpFrag(fits).ufrag?.length, MAX_SDP_BYTES - 12);
});
