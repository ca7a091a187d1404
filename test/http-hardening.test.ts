/**
 * The HTTP edge under hostile input (issue 8): every error in the one shape (Fastify's and
 * Node's own included), one name limit and one SDP limit on every entry point, a per-IP
 * request rate limit, and no work for a request whose token does not check out. Against a
 * single process; http-hardening.edge.test.ts runs the same cases through the edge and two
 * media worker processes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import type { Grant, TokenService } from '../src/auth/tokens.ts';
import { AppError } from '../src/common/errors.ts';
import { MAX_NAME_LENGTH, MAX_PATH_PARAM_LENGTH, MAX_SDP_BYTES } from '../src/common/limits.ts';
import { type Config, loadConfig } from '../src/config.ts';
import { startEdge, type EdgeService } from '../src/edge/edge-service.ts';
import { startService } from '../src/service.ts';
import { rawSocket, someOffer } from './helpers/client.ts';

const EDGE_WORKERS = Number(process.env.TEST_EDGE_WORKERS ?? 0);

/** A node (single process, or the edge with its workers) whose log lines the test reads. */
interface Node {
  httpUrl: string;
  wsUrl: string;
  config: Config;
  tokens: TokenService;
  /** Every log line the node (the edge, for an edge) wrote. */
  logs: string[];
  logBytes(): number;
  /** Rooms handed to a media worker by the edge; rooms open in the single process. */
  roomsCreated(): number;
  close(): Promise<void>;
}

async function startNode(env: Record<string, string> = {}): Promise<Node> {
  const logs: string[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) });
  // Workers log at warn to their own output; the node's own logger above takes everything.
  const config = loadConfig({ SCV_HTTP_PORT: '0', SCV_LOG_LEVEL: 'warn', SCV_OVERLOAD_UTILIZATION: 'off', SCV_MEDIA_WORKERS: String(EDGE_WORKERS), ...env });
  const logBytes = () => logs.reduce((n, l) => n + l.length, 0);
  if (EDGE_WORKERS > 0) {
    const edge: EdgeService = await startEdge(config, { log });
    // The pool's assignments are what the issue saw grow; no API lists them.
    const assignments = (edge.pool as unknown as { rooms: Map<string, unknown> }).rooms;
    return { httpUrl: edge.httpUrl, wsUrl: edge.wsUrl, config, tokens: edge.tokens, logs, logBytes, roomsCreated: () => assignments.size, close: () => edge.close() };
  }
  const svc = await startService(config, { log });
  return { httpUrl: svc.httpUrl, wsUrl: svc.wsUrl, config, tokens: svc.tokens, logs, logBytes, roomsCreated: () => svc.sfu.roomCount, close: () => svc.close() };
}

interface Reply {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

/** One request over node:http, so any method (TRACE) and chunked bodies can be sent. */
function http(node: Node, method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer | string; chunked?: boolean } = {}): Promise<Reply> {
  const url = new URL(node.httpUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: the assertion shows it
        }
        resolve({ status: res.statusCode!, body, headers: res.headers });
      });
    });
    // The server may answer (413) and close before the whole body is written: the answer counts.
    let answered = false;
    req.on('response', () => (answered = true));
    req.on('error', (err) => (answered ? undefined : reject(err)));
    const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
    if (body !== undefined && opts.chunked === true) {
      // Explicit: Node's client would send a GET or OPTIONS body unframed.
      req.setHeader('transfer-encoding', 'chunked');
      for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.subarray(i, i + 64 * 1024));
    } else if (body !== undefined) {
      req.setHeader('content-length', body.length);
      req.write(body);
    }
    req.end();
  });
}

/** Bytes straight onto a TCP connection; the raw response text. */
function rawHttp(node: Node, bytes: string): Promise<string> {
  const url = new URL(node.httpUrl);
  return new Promise((resolve) => {
    const sock = connect(Number(url.port), url.hostname, () => sock.write(bytes));
    let text = '';
    sock.on('data', (d) => (text += d.toString('utf8')));
    sock.on('error', () => {});
    sock.on('close', () => resolve(text));
    setTimeout(() => sock.destroy(), 5_000).unref();
  });
}

function assertError(r: { status: number; body: any }, status: number, code: string, what = ''): void {
  assert.equal(r.status, status, `${what}: expected ${status} ${code}, got ${r.status} ${JSON.stringify(r.body)?.slice(0, 300)}`);
  assert.equal(typeof r.body, 'object', `${what}: error body is JSON: ${String(r.body).slice(0, 300)}`);
  assert.deepEqual(Object.keys(r.body), ['error'], `${what}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.error.code, code, `${what}: ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body.error.message, 'string');
}

/** The status line and JSON body of a raw HTTP response. */
function parseRaw(text: string): { status: number; body: any } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
  const json = text.slice(text.indexOf('\r\n\r\n') + 4);
  let body: unknown = json;
  try {
    body = JSON.parse(json);
  } catch {
    // not JSON: the assertion shows it
  }
  return { status, body };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const enc = encodeURIComponent;

/** `sdp` grown to exactly `bytes` with session-level attribute lines nobody interprets. */
function padSdp(sdp: string, bytes: number): string {
  const at = sdp.indexOf('\r\nm=') + 2;
  let pad = '';
  const room = bytes - Buffer.byteLength(sdp);
  assert.ok(room > 20, 'the offer is already that large');
  while (pad.length < room) {
    const left = room - pad.length;
    pad += left > 1000 ? `a=x-pad:${'p'.repeat(990)}\r\n` : `a=x-pad:${'p'.repeat(Math.max(0, left - 10))}\r\n`;
  }
  const out = sdp.slice(0, at) + pad + sdp.slice(at);
  assert.equal(Buffer.byteLength(out), bytes, 'padded SDP size');
  return out;
}

/** A token this node's key signs, with claims minting would refuse. */
function selfSigned(node: Node, claims: { sub: string; room?: string; grants?: Grant[] }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ room: claims.room, grants: claims.grants ?? ['publish', 'subscribe'] })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(node.config.auth.apiKey)
    .setSubject(claims.sub)
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(new TextEncoder().encode(node.config.auth.apiSecret));
}

async function wsJoinReply(node: Node, token: string, name?: string): Promise<Record<string, unknown>> {
  const s = await rawSocket(node.wsUrl);
  try {
    s.send({ type: 'join', id: 1, protocol: 1, token, ...(name === undefined ? {} : { name }) });
    return await s.nextJson();
  } finally {
    s.close();
  }
}

let node: Node;

before(async () => {
  node = await startNode();
});

after(async () => {
  await node?.close();
});

describe('one error shape', () => {
  test("Fastify's and Node's own errors are coded: bad URL, long segment, no upgrade, unknown method, malformed request, big headers", async () => {
    assertError(await http(node, 'POST', '/whip/%ZZ'), 400, 'BAD_REQUEST', '/whip/%ZZ');
    assertError(await http(node, 'GET', '/video/rooms/%E0%A4%A'), 400, 'BAD_REQUEST', 'truncated UTF-8 escape');
    assertError(await http(node, 'POST', `/whip/${'a'.repeat(MAX_PATH_PARAM_LENGTH + 1)}`), 400, 'VALIDATION_FAILED', 'segment over the router limit');
    assertError(await http(node, 'GET', '/video/ws'), 426, 'UPGRADE_REQUIRED', 'GET /video/ws without upgrade');
    assert.equal((await http(node, 'HEAD', '/video/ws')).status, 426, 'HEAD /video/ws (no body, by definition)');
    assertError(await http(node, 'TRACE', '/'), 404, 'NOT_FOUND', 'TRACE /');
    assertError(await http(node, 'TRACE', '/whip/r'), 404, 'NOT_FOUND', 'TRACE /whip/r');
    assertError(await http(node, 'PUT', '/whip/r'), 404, 'NOT_FOUND', 'PUT /whip/r');
    assertError(await http(node, 'GET', '/no/such/path'), 404, 'NOT_FOUND', 'unknown path');
    const longUrl = await http(node, 'GET', `/${'x'.repeat(8000)}`);
    assertError(longUrl, 404, 'NOT_FOUND', 'long unknown path');
    assert.ok(longUrl.body.error.message.length < 300, `the error echoes a clipped path: ${longUrl.body.error.message.length} characters`);

    const unknownMethod = parseRaw(await rawHttp(node, 'FOO / HTTP/1.1\r\nHost: x\r\n\r\n'));
    assertError(unknownMethod, 400, 'BAD_REQUEST', 'unknown method FOO');
    assertError(parseRaw(await rawHttp(node, 'garbage\r\n\r\n')), 400, 'BAD_REQUEST', 'not HTTP');
    const bigHeaders = parseRaw(await rawHttp(node, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    assertError(bigHeaders, 431, 'HEADERS_TOO_LARGE', 'headers over 16 KiB');
  });

  test('an 8 MB body gets a coded 413 on every kind of route, sized or chunked, and no error is logged', async () => {
    const big = Buffer.alloc(8 << 20, 'x');
    const tok = await node.tokens.mint({ identity: 'big', room: 'big', grants: ['publish', 'subscribe', 'admin'] });
    const cases: [string, string, string][] = [
      ['POST', '/video/signal', 'application/json'],
      ['POST', '/video/rooms', 'application/json'],
      ['POST', '/whip/big', 'application/sdp'],
      ['POST', '/whep/big/someone', 'application/sdp'],
      ['PATCH', '/whip/big/PA_000000000000', 'application/trickle-ice-sdpfrag'],
      ['POST', '/video/signal', 'text/plain'],
      ['OPTIONS', '/whip/big', 'application/sdp'],
      ['DELETE', '/whip/big/PA_000000000000', 'application/json'],
      ['POST', '/', 'text/plain'],
    ];
    for (const [method, path, type] of cases) {
      for (const chunked of [false, true]) {
        for (const auth of [{}, bearer(tok)]) {
          const what = `${method} ${path} ${type}${chunked ? ' chunked' : ''}${'authorization' in auth ? ' with token' : ''}`;
          assertError(await http(node, method, path, { headers: { 'content-type': type, ...auth }, body: big, chunked }), 413, 'MESSAGE_TOO_LARGE', what);
        }
      }
    }
    const errors = node.logs.filter((l) => (JSON.parse(l) as { level: number }).level >= 50);
    assert.deepEqual(errors, [], 'nothing is logged at error level');
  });
});

describe('one name limit', () => {
  // Three bytes of UTF-8 each: percent-encoded, the longest path segment a name can need.
  const room = '€'.repeat(MAX_NAME_LENGTH);
  const identity = `i${'d'.repeat(MAX_NAME_LENGTH - 1)}`;
  const tooLong = 'r'.repeat(MAX_NAME_LENGTH + 1);

  test(`names of ${MAX_NAME_LENGTH} characters work at minting, at join and on every route`, async () => {
    assert.equal(enc(room).length, MAX_PATH_PARAM_LENGTH);
    const tok = await node.tokens.mint({ identity, room, name: 'n'.repeat(MAX_NAME_LENGTH) });
    const admin = await node.tokens.mint({ identity: 'ops', grants: ['admin'] });
    const dev = await http(node, 'GET', `/dev/token?room=${enc(room)}&identity=${identity}&name=${'n'.repeat(MAX_NAME_LENGTH)}`);
    assert.equal(dev.status, 200, JSON.stringify(dev.body));

    // (That participant then waits out its reconnect grace: the sessions below use other identities.)
    const joined = await wsJoinReply(node, tok, 'm'.repeat(MAX_NAME_LENGTH));
    assert.equal(joined.type, 'joined', JSON.stringify(joined));

    const whipTok = await node.tokens.mint({ identity: `w${identity.slice(1)}`, room });
    const created = await http(node, 'POST', `/whip/${enc(room)}`, { headers: { 'content-type': 'application/sdp', ...bearer(whipTok) }, body: await someOffer() });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const location = String(created.headers.location);
    assert.ok(location.startsWith(`/whip/${enc(room)}/`), location);
    const patched = await http(node, 'PATCH', location, { headers: { 'content-type': 'application/trickle-ice-sdpfrag', ...bearer(whipTok) }, body: 'a=end-of-candidates\r\n' });
    assert.equal(patched.status, 204, JSON.stringify(patched.body));

    const listed = await http(node, 'GET', `/video/rooms/${enc(room)}`, { headers: bearer(admin) });
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.ok(listed.body.participants.some((p: { identity: string }) => p.identity === `w${identity.slice(1)}`));

    const viewer = await node.tokens.mint({ identity: 'viewer', room, grants: ['subscribe'] });
    const whep = await http(node, 'POST', `/whep/${enc(room)}/w${identity.slice(1)}`, { headers: { 'content-type': 'application/sdp', ...bearer(viewer) }, body: await someOffer('recvonly') });
    assert.equal(whep.status, 201, JSON.stringify(whep.body));
    const player = String(whep.headers.location);
    assert.ok(player.startsWith(`/whep/${enc(room)}/w${identity.slice(1)}/`), player);
    assertError(await http(node, 'DELETE', `/whep/${enc(room)}/${identity}/PA_000000000000`, { headers: bearer(viewer) }), 404, 'PEER_NOT_FOUND', 'WHEP DELETE, no such session');
    assert.equal((await http(node, 'DELETE', player, { headers: bearer(viewer) })).status, 200);

    const recorder = await node.tokens.mint({ identity: 'rec', room, grants: ['record'] });
    const stop = await http(node, 'DELETE', `/video/rooms/${enc(room)}/recording`, { headers: bearer(recorder) });
    assert.notEqual(stop.body?.error?.code, 'VALIDATION_FAILED', JSON.stringify(stop.body));
    assert.ok(stop.status < 500, JSON.stringify(stop.body));

    const seedTok = await node.tokens.mint({ identity: `s${identity.slice(1)}`, room });
    const signal = await http(node, 'POST', '/video/signal', {
      headers: { 'content-type': 'application/json', ...bearer(seedTok) },
      body: JSON.stringify({ room_id: room, peer_id: `s${identity.slice(1)}`, sdp: await someOffer(), type: 'offer' }),
    });
    assert.equal(signal.status, 200, JSON.stringify(signal.body));
    const leave = await http(node, 'POST', '/video/leave', { headers: { 'content-type': 'application/json', ...bearer(seedTok) }, body: JSON.stringify({ room_id: room, peer_id: `s${identity.slice(1)}` }) });
    assert.equal(leave.status, 200, JSON.stringify(leave.body));
    assert.equal((await http(node, 'DELETE', location, { headers: bearer(whipTok) })).status, 200);
  });

  test(`a name of ${MAX_NAME_LENGTH + 1} characters is refused everywhere with VALIDATION_FAILED (or UNAUTHORIZED in a token)`, async () => {
    const rooms0 = node.roomsCreated();
    for (const opts of [{ identity: tooLong, room: 'r' }, { identity: 'i', room: tooLong }, { identity: 'i', room: 'r', name: tooLong }]) {
      await assert.rejects(node.tokens.mint(opts), (err: unknown) => err instanceof AppError && err.code === 'VALIDATION_FAILED', JSON.stringify(opts));
    }
    const env = { PATH: process.env.PATH, SCV_API_KEY: 'cli-key', SCV_API_SECRET: 's'.repeat(40) };
    const cli = spawnSync(process.execPath, ['src/cli/token.ts', '--room', tooLong, '--identity', 'i'], { env, encoding: 'utf8', timeout: 20_000 });
    assert.equal(cli.status, 2, `npm run token with a long room: ${cli.stderr}`);
    assert.match(cli.stderr, new RegExp(`room: .*${MAX_NAME_LENGTH}`));
    assertError(await http(node, 'GET', `/dev/token?room=${tooLong}&identity=i`), 400, 'VALIDATION_FAILED', '/dev/token room');
    assertError(await http(node, 'GET', `/dev/token?room=r&identity=${tooLong}`), 400, 'VALIDATION_FAILED', '/dev/token identity');

    // Signed with the server's own key but naming too long a room: not a token it issues.
    const forged = await selfSigned(node, { sub: 'i', room: tooLong });
    assertError(await http(node, 'POST', `/whip/r`, { headers: { 'content-type': 'application/sdp', ...bearer(forged) }, body: 'v=0' }), 401, 'UNAUTHORIZED', 'token with a long room');
    const wsForged = await wsJoinReply(node, forged);
    assert.equal(wsForged.code, 'UNAUTHORIZED', JSON.stringify(wsForged));
    const wsName = await wsJoinReply(node, await node.tokens.mint({ identity: 'i', room: 'r' }), tooLong);
    assert.equal(wsName.code, 'VALIDATION_FAILED', JSON.stringify(wsName));

    const admin = await node.tokens.mint({ identity: 'ops', grants: ['admin', 'publish', 'subscribe', 'record'] });
    const sdp = { 'content-type': 'application/sdp', ...bearer(admin) };
    const frag = { 'content-type': 'application/trickle-ice-sdpfrag', ...bearer(admin) };
    const json = { 'content-type': 'application/json', ...bearer(admin) };
    const routes: [string, string, Record<string, string>, string?][] = [
      ['GET', `/video/rooms/${tooLong}`, bearer(admin)],
      ['POST', `/video/rooms/${tooLong}/recording`, bearer(admin)],
      ['DELETE', `/video/rooms/${tooLong}/recording`, bearer(admin)],
      ['POST', `/whip/${tooLong}`, sdp, 'v=0\r\n'],
      ['PATCH', `/whip/${tooLong}/PA_000000000000`, frag, 'a=end-of-candidates\r\n'],
      ['DELETE', `/whip/${tooLong}/PA_000000000000`, bearer(admin)],
      ['POST', `/whep/${tooLong}/someone`, sdp, 'v=0\r\n'],
      ['POST', `/whep/r/${tooLong}`, sdp, 'v=0\r\n'],
      ['PATCH', `/whep/${tooLong}/someone/PA_000000000000`, frag, 'a=end-of-candidates\r\n'],
      ['DELETE', `/whep/r/${tooLong}/PA_000000000000`, bearer(admin)],
      ['POST', '/video/signal', json, JSON.stringify({ room_id: tooLong, peer_id: 'ops', sdp: 'v=0', type: 'offer' })],
      ['POST', '/video/signal', json, JSON.stringify({ room_id: 'r', peer_id: tooLong, sdp: 'v=0', type: 'offer' })],
      ['POST', '/video/ice', json, JSON.stringify({ room_id: tooLong, peer_id: 'ops', candidate: null })],
      ['POST', '/video/leave', json, JSON.stringify({ room_id: tooLong, peer_id: 'ops' })],
      ['POST', '/video/rooms', json, JSON.stringify({ name: tooLong })],
    ];
    for (const [method, path, headers, body] of routes) {
      assertError(await http(node, method, path, { headers, body }), 400, 'VALIDATION_FAILED', `${method} ${path.slice(0, 40)} ${body?.slice(0, 40) ?? ''}`);
    }
    assert.equal(node.roomsCreated(), rooms0, 'no room was created for a refused name');
  });
});

describe('one SDP limit', () => {
  test(`an SDP of ${MAX_SDP_BYTES} bytes is accepted; one byte more is SDP_TOO_LARGE on every SDP entry point`, async () => {
    const tok = await node.tokens.mint({ identity: 'big-sdp', room: 'sdp-room' });
    const offer = await someOffer();
    const fits = padSdp(offer, MAX_SDP_BYTES);
    const over = padSdp(offer, MAX_SDP_BYTES + 1);
    const sdpHeaders = { 'content-type': 'application/sdp', ...bearer(tok) };

    const created = await http(node, 'POST', '/whip/sdp-room', { headers: sdpHeaders, body: fits });
    assert.equal(created.status, 201, JSON.stringify(created.body).slice(0, 300));
    const location = String(created.headers.location);
    const fragOver = `a=end-of-candidates\r\n${'a=x-pad:p\r\n'.repeat(Math.ceil(MAX_SDP_BYTES / 11))}`;
    assertError(await http(node, 'PATCH', location, { headers: { 'content-type': 'application/trickle-ice-sdpfrag', ...bearer(tok) }, body: fragOver }), 413, 'SDP_TOO_LARGE', 'trickle fragment');
    assert.equal((await http(node, 'DELETE', location, { headers: bearer(tok) })).status, 200);

    assertError(await http(node, 'POST', '/whip/sdp-room', { headers: sdpHeaders, body: over }), 413, 'SDP_TOO_LARGE', 'WHIP offer');
    assertError(await http(node, 'POST', '/whip/sdp-room', { headers: sdpHeaders, body: padSdp(offer, 200 * 1000) }), 413, 'SDP_TOO_LARGE', 'a 200 KB WHIP offer');
    const viewer = await node.tokens.mint({ identity: 'v', room: 'sdp-room', grants: ['subscribe'] });
    const recvOver = padSdp(await someOffer('recvonly'), MAX_SDP_BYTES + 1);
    assertError(await http(node, 'POST', '/whep/sdp-room/big-sdp', { headers: { 'content-type': 'application/sdp', ...bearer(viewer) }, body: recvOver }), 413, 'SDP_TOO_LARGE', 'WHEP offer');
    const json = { 'content-type': 'application/json', ...bearer(tok) };
    for (const body of [
      { room_id: 'sdp-room', peer_id: 'big-sdp', sdp: over, type: 'offer' },
      { room_id: 'sdp-room', peer_id: 'big-sdp', sdp: { type: 'offer', sdp: over } },
    ]) {
      assertError(await http(node, 'POST', '/video/signal', { headers: json, body: JSON.stringify(body) }), 413, 'SDP_TOO_LARGE', 'seed API offer');
    }

    // Over the signaling socket: the offer before join, and the subscriber answer after it.
    const s = await rawSocket(node.wsUrl);
    try {
      s.send({ type: 'offer', id: 1, target: 'publisher', sdp: over });
      const early = await s.nextJson();
      assert.equal(early.code, 'SDP_TOO_LARGE', JSON.stringify(early));
      s.send({ type: 'join', id: 2, protocol: 1, token: await node.tokens.mint({ identity: 'ws-sdp', room: 'sdp-room' }) });
      assert.equal((await s.nextJson()).type, 'joined');
      s.send({ type: 'offer', id: 3, target: 'publisher', sdp: over });
      let reply = await s.nextJson();
      while (reply.id !== 3) reply = await s.nextJson();
      assert.equal(reply.code, 'SDP_TOO_LARGE', JSON.stringify(reply));
      s.send({ type: 'answer', id: 4, target: 'subscriber', sdp: over });
      reply = await s.nextJson();
      while (reply.id !== 4) reply = await s.nextJson();
      assert.equal(reply.code, 'SDP_TOO_LARGE', JSON.stringify(reply));
      s.send({ type: 'leave' });
    } finally {
      s.close();
    }
  });
});

describe('no work before authentication', () => {
  test('400 unauthenticated offers naming 250 KB rooms: each 401, no room assigned or created, nothing of them logged', async () => {
    const before = node.logBytes();
    const rooms0 = node.roomsCreated();
    const huge = (i: number) => `${String(i).padStart(6, '0')}${'Z'.repeat(250_000)}`;
    const forOther = await node.tokens.mint({ identity: 'mallory', room: 'mallory-room', grants: ['publish', 'subscribe'] });
    const garbageToken = `${'a'.repeat(40)}.${'b'.repeat(40)}.${'c'.repeat(40)}`;
    for (let batch = 0; batch < 20; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, k) => {
          const i = batch * 20 + k;
          const headers = { 'content-type': 'application/json', ...(i % 2 === 0 ? {} : bearer(garbageToken)) };
          const r = await http(node, 'POST', '/video/signal', { headers, body: JSON.stringify({ room_id: huge(i), peer_id: 'p', sdp: 'v=0', type: 'offer' }) });
          assertError(r, 401, 'UNAUTHORIZED', `request ${i}`);
        }),
      );
    }
    // The same through the other entry points that may create a room.
    for (let i = 0; i < 20; i++) {
      const name = `${i}${'Y'.repeat(1000)}`;
      assertError(await http(node, 'POST', `/whip/${name}`, { headers: { 'content-type': 'application/sdp' }, body: 'v=0\r\n' }), 401, 'UNAUTHORIZED', 'WHIP');
      assertError(await http(node, 'POST', `/whep/${name}/x`, { headers: { 'content-type': 'application/sdp' }, body: 'v=0\r\n' }), 401, 'UNAUTHORIZED', 'WHEP');
      assertError(await http(node, 'POST', '/video/rooms', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) }), 401, 'UNAUTHORIZED', 'room creation');
      // A valid token, for another room: refused before the room is assigned anywhere.
      const other = `${i}-not-mallorys`;
      assertError(await http(node, 'POST', `/whip/${other}`, { headers: { 'content-type': 'application/sdp', ...bearer(forOther) }, body: 'v=0\r\n' }), 403, 'FORBIDDEN', 'WHIP, other room');
      const signal = { room_id: other, peer_id: 'mallory', sdp: 'v=0', type: 'offer' };
      assertError(await http(node, 'POST', '/video/signal', { headers: { 'content-type': 'application/json', ...bearer(forOther) }, body: JSON.stringify(signal) }), 403, 'FORBIDDEN', 'seed, other room');
      const ws = await wsJoinReply(node, `${garbageToken}${name}`);
      assert.equal(ws.code, 'UNAUTHORIZED', JSON.stringify(ws).slice(0, 200));
    }
    assert.equal(node.roomsCreated(), rooms0, 'no room assigned or created');
    const admin = await node.tokens.mint({ identity: 'ops', grants: ['admin'] });
    const list = await http(node, 'GET', '/video/rooms', { headers: bearer(admin) });
    assert.equal(list.status, 200);
    assert.ok(!list.body.rooms.some((r: { name: string }) => /ZZZZ|YYYY|not-mallorys/.test(r.name)), JSON.stringify(list.body).slice(0, 300));
    const logged = node.logs.join('');
    assert.ok(!/ZZZZ|YYYY|not-mallorys/.test(logged), 'no client-supplied name reached the log');
    assert.ok(node.logBytes() - before < 16 * 1024, `log volume stays small: ${node.logBytes() - before} bytes`);
  });
});

describe('per-IP request rate', () => {
  const LIMIT = 40;
  let limited: Node;

  before(async () => {
    limited = await startNode({ SCV_HTTP_RATE_LIMIT: String(LIMIT), SCV_HTTP_RATE_WINDOW: '600' });
  });

  after(async () => {
    await limited?.close();
  });

  test('the default allows a busy client and limits a flood', () => {
    const d = loadConfig({}).limits.httpRate;
    assert.deepEqual(d, { max: 2000, windowMs: 10_000 });
    assert.equal(loadConfig({ SCV_HTTP_RATE_LIMIT: 'off' }).limits.httpRate, undefined);
  });

  test(`request ${LIMIT + 1} from one address within the window is RATE_LIMITED (429) on every route; health and metrics still answer`, async () => {
    for (let i = 0; i < LIMIT; i++) {
      assertError(await http(limited, 'GET', '/video/rooms'), 401, 'UNAUTHORIZED', `request ${i + 1}`);
    }
    const over = await http(limited, 'GET', '/video/rooms');
    assertError(over, 429, 'RATE_LIMITED', 'over the limit');
    assert.ok(Number(over.headers['retry-after']) > 0, `retry-after: ${over.headers['retry-after']}`);
    const tok = await limited.tokens.mint({ identity: 'a', room: 'r' });
    assertError(await http(limited, 'POST', '/whip/r', { headers: { 'content-type': 'application/sdp', ...bearer(tok) }, body: 'v=0\r\n' }), 429, 'RATE_LIMITED', 'WHIP');
    assertError(await http(limited, 'GET', '/no/such/path'), 429, 'RATE_LIMITED', 'unknown path');
    assertError(await http(limited, 'GET', '/video/ws'), 429, 'RATE_LIMITED', 'signaling endpoint');
    // A WebSocket upgrade is a request too.
    const upgrade = parseRaw(
      await rawHttp(limited, 'GET /video/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'),
    );
    assertError(upgrade, 429, 'RATE_LIMITED', 'WebSocket upgrade');
    for (let i = 0; i < 5; i++) {
      const health = await http(limited, 'GET', '/healthz');
      assert.equal(health.status, 200, JSON.stringify(health.body));
      assert.equal((await http(limited, 'GET', '/metrics')).status, 200);
    }
  });
});
