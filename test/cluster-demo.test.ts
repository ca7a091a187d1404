/**
 * `npm run cluster:demo` (scripts/cluster-demo.ts) as a person runs it: redis-server and
 * three nodes come up, the printed call-page tokens join one room through two different
 * nodes and media flows, the listing at a third node shows the room once, and SIGINT stops
 * every process it started (the nodes' media workers included) and exits 0.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { TestClient } from './helpers/client.ts';
import { eventually } from './helpers/service.ts';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('the cluster demo starts redis and three nodes, a call works through two of them, and SIGINT stops it all with exit 0', async () => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const demo: ChildProcess = spawn(process.execPath, ['scripts/cluster-demo.ts'], {
    env: { ...process.env, CLUSTER_DEMO_PORTS: ports.join(','), CLUSTER_DEMO_MEDIA_PORT: '47000', SCV_LOG_LEVEL: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  demo.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  // Kept for the failure message (why the demo or one of its children stopped), and shown as it comes.
  let errOut = '';
  demo.stderr!.on('data', (d: Buffer) => {
    errOut += d.toString();
    process.stderr.write(d);
  });
  const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)));
  const clients: TestClient[] = [];
  let pids: number[] = [];
  try {
    await eventually(() => out.includes('Ctrl-C stops everything.') || demo.exitCode !== null, 'the demo to say it is up', 60_000);
    assert.equal(demo.exitCode, null, `${out}\n${errOut}`);
    const urls = [...out.matchAll(/^ {2}node-(\d) {2}(http:\/\/\S+)$/gm)].map((m) => new URL(m[2]!));
    assert.deepEqual(urls.map((u) => Number(u.port)), ports, out);
    const admin = /authorization: Bearer ([^']+)'/.exec(out)![1]!;
    pids = /^pids: (.*)$/m.exec(out)![1]!.split(', ').map((p) => Number(p.split(' ').pop()));
    assert.equal(pids.length, 4);

    const base = (i: number) => `http://127.0.0.1:${ports[i]}`;
    await eventually(
      async () => (await Promise.all(ports.map((_, i) => fetch(`${base(i)}/healthz`).then((r) => r.json() as Promise<any>)))).every((h) => h.cluster?.nodes === 3),
      'every node to see three',
      10_000,
    );
    // The media workers are the nodes' children: they must be gone too at the end.
    for (let i = 0; i < 3; i++) {
      const health = (await (await fetch(`${base(i)}/healthz`)).json()) as { workers: { pid: number }[] };
      pids.push(...health.workers.map((w) => w.pid));
    }
    assert.equal(pids.length, 7, 'redis, three nodes, three workers');

    // guest-1 through node-1, guest-2 through node-2: one room "demo" on whichever node it hashes to.
    for (const i of [0, 1]) {
      const token = urls[i]!.searchParams.get('token')!;
      clients.push(await TestClient.join({ wsUrl: `ws://127.0.0.1:${ports[i]}/video/ws`, token, name: `guest-${i + 1}` }));
    }
    await Promise.all(clients.map((c) => c.publishTracks([{ kind: 'audio' }, { kind: 'video' }])));
    const [g1, g2] = clients as [TestClient, TestClient];
    await Promise.all([
      g1.waitForTrackFrom('guest-2', 'video', { minPackets: 30, minVerified: 30, minKeyframes: 1 }),
      g2.waitForTrackFrom('guest-1', 'video', { minPackets: 30, minVerified: 30, minKeyframes: 1 }),
    ]);
    const listing = (await (await fetch(`${base(2)}/video/rooms`, { headers: { authorization: `Bearer ${admin}` } })).json()) as any;
    const demoRooms = listing.rooms.filter((r: any) => r.name === 'demo');
    assert.equal(demoRooms.length, 1, JSON.stringify(listing));
    assert.equal(demoRooms[0].participants, 2);
    assert.match(demoRooms[0].node, /^node-[123]$/);
    assert.deepEqual(listing.unreachable, []);
    process.stdout.write(`# room "demo" hosted by ${demoRooms[0].node}, joined through node-1 and node-2\n`);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    if (demo.exitCode === null) demo.kill('SIGINT');
  }
  const stoppedAt = Date.now();
  assert.equal(await exited, 0, out);
  const left = pids.filter(alive);
  const describe = (pid: number) => {
    try {
      return `${pid}: ${readFileSync(`/proc/${pid}/stat`, 'utf8').slice(0, 80)}`;
    } catch {
      return `${pid}: gone`;
    }
  };
  assert.deepEqual(left, [], `processes left after the demo exited (pids ${pids.join(' ')}): ${left.map(describe).join('; ')}`);
  process.stdout.write(`# SIGINT to exit 0: ${Date.now() - stoppedAt} ms, ${pids.length} processes gone\n`);
});
