/** Operations: health, metrics, admin room listing, development tokens, clean shutdown. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { TestClient } from './helpers/client.ts';
import { TestService } from './helpers/service.ts';

let svc: TestService;
before(async () => {
  svc = await TestService.start();
});
after(() => svc.close());

test('GET /healthz', async () => {
  const r = await svc.fetch('/healthz');
  assert.equal(r.status, 200);
  assert.equal(r.body.status, 'ok');
});

test('GET /metrics speaks Prometheus and counts what happens', async () => {
  const a = await svc.join('m-a', 'metrics');
  const b = await svc.join('m-b', 'metrics');
  await a.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  await b.waitForTrackFrom('m-a', 'video', { minPackets: 30 });
  const r = await svc.fetch('/metrics');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /text\/plain/);
  for (const name of [
    'scv_rooms',
    'scv_participants',
    'scv_published_tracks',
    'scv_rtp_packets_received_total',
    'scv_rtp_packets_forwarded_total',
    'scv_rtp_bytes_forwarded_total',
    'scv_rtp_packets_dropped_total',
    'scv_nacks_received_total',
    'scv_plis_received_total',
  ]) {
    assert.match(String(r.body), new RegExp(`^# TYPE ${name} `, 'm'), name);
  }
  assert.ok((await svc.metric('scv_participants')) >= 2);
  assert.ok((await svc.metric('scv_published_tracks')) >= 2);
  assert.ok((await svc.metric('scv_rtp_packets_forwarded_total')) >= 30);
  assert.ok((await svc.metric('scv_rtp_bytes_forwarded_total')) > 0);
  await Promise.all([a.close({ leave: true }), b.close({ leave: true })]);
});

test('room listing needs an admin token', async () => {
  const c = await svc.join('lister', 'listed');
  const admin = await svc.token('ops', undefined, ['admin']);
  const list = await svc.fetch('/video/rooms', { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(list.status, 200);
  assert.ok(list.body.rooms.some((r: { name: string; participants: number }) => r.name === 'listed' && r.participants === 1));
  const one = await svc.fetch('/video/rooms/listed', { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(one.status, 200);
  assert.deepEqual(one.body.participants.map((p: { identity: string }) => p.identity), ['lister']);
  const missing = await svc.fetch('/video/rooms/nope', { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'ROOM_NOT_FOUND');
  const user = await svc.fetch('/video/rooms', { headers: { authorization: `Bearer ${await svc.token('u', 'listed')}` } });
  assert.equal(user.status, 403);
  assert.equal(user.body.error.code, 'FORBIDDEN');
  const anon = await svc.fetch('/video/rooms');
  assert.equal(anon.status, 401);
  assert.equal(anon.body.error.code, 'UNAUTHORIZED');
  const unknown = await svc.fetch('/no/such/route');
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, 'NOT_FOUND');
  await c.close({ leave: true });
});

test('the development token endpoint works only with the development key', async () => {
  const r = await svc.fetch('/dev/token?room=dev&identity=tab1');
  assert.equal(r.status, 200);
  const c = await TestClient.join({ wsUrl: svc.service.wsUrl, token: r.body.token });
  assert.equal(c.joined!.room.name, 'dev');
  await c.close({ leave: true });
  const bad = await svc.fetch('/dev/token?room=dev');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'VALIDATION_FAILED');
  const prod = await TestService.start({ SCV_API_KEY: 'prod', SCV_API_SECRET: 'p'.repeat(40) });
  try {
    const off = await prod.fetch('/dev/token?room=dev&identity=x');
    assert.equal(off.status, 404);
  } finally {
    await prod.close();
  }
});

test('SIGTERM closes every connection and exits cleanly', async () => {
  const child = spawn(process.execPath, ['src/main.ts', '--http-port', '0', '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  const listening = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: string) => {
      out += d;
      const m = /"signaling":"(ws:[^"]+)"/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', () => reject(new Error(`exited early: ${out}`)));
  });
  const wsUrl = await listening;
  const httpBase = wsUrl.replace('ws:', 'http:').replace('/video/ws', '');
  const { token } = (await (await fetch(`${httpBase}/dev/token?room=bye&identity=a`)).json()) as { token: string };
  const c = await TestClient.join({ wsUrl, token });
  await c.publishTracks([{ kind: 'audio' }]);
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, out);
  assert.match(out, /"msg":"stopped"/);
  const left = await c.waitForEvent('left', () => true, 5_000);
  assert.equal(left.reason, 'server_shutdown');
  await c.waitForSocketClose(5_000);
  await c.close();
});
