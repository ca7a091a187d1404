/**
 * werift's internals behind src/sfu/werift-adapter.ts, on live connections through the SFU:
 * a normal connection passes the adapter's checks; one whose werift fields are not what the
 * adapter expects (a werift upgrade, simulated by breaking one field before the transport
 * connects) fails loudly, with the error log, the metric and the transport closed, instead
 * of dropping every packet without a word. And a closed DownTrack passes nothing upstream:
 * the subscriber's PLIs no longer reach the publisher.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import type { DownTrack } from '../src/sfu/down-track.ts';
import { MediaStats } from '../src/sfu/media-stats.ts';
import type { PublishedTrack } from '../src/sfu/published-track.ts';
import { checkDtls, checkReceiver, checkSender, failTransport } from '../src/sfu/werift-adapter.ts';
import type { Service } from '../src/service.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

let svc: TestService<Service>;
before(async () => {
  svc = await TestService.start();
});
after(async () => {
  await svc.close();
});

const videoTrackOf = (room: string, ownerIdentity: string): PublishedTrack | undefined => {
  const r = svc.service.sfu.findRoom(room);
  const owner = r?.byIdentity(ownerIdentity);
  return r?.tracks().find((t) => t.ownerSid === owner?.sid && t.kind === 'video');
};

const downTrackOf = (room: string, ownerIdentity: string, subscriberIdentity: string): DownTrack | undefined => {
  const sub = svc.service.sfu.findRoom(room)?.byIdentity(subscriberIdentity);
  return videoTrackOf(room, ownerIdentity)?.subscribers.find((dt) => dt.subscriberSid === sub?.sid);
};

test('a normal connection passes the adapter checks and forwards', async () => {
  const room = 'adapter-ok';
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  await pub.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  await sub.waitForTrackFrom('pub', 'video', { minPackets: 30, minKeyframes: 1 });
  const dt = downTrackOf(room, 'pub', 'sub')!;
  assert.deepEqual(checkSender(dt.transceiver.sender), []);
  assert.deepEqual(checkDtls(dt.transceiver.sender.dtlsTransport), []);
  // Both ends passed: the publisher's receivers are checked at their first packet (our TWCC hook is the one werift calls).
  assert.equal(await svc.metric('scv_werift_adapter_failures_total'), 0);
  assert.equal(svc.service.sfu.stats.weriftAdapterFailures, 0);
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});

test('a werift field that is not there closes the transport with an error and a count', async () => {
  const room = 'adapter-broken';
  const failuresBefore = await svc.metric('scv_werift_adapter_failures_total');
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  // What an upgrade that renamed the sender's runRtcp would look like, on the server's
  // sender for `sub`, before its transport connects.
  let broken: DownTrack | undefined;
  const breaker = setInterval(() => {
    const dt = downTrackOf(room, 'pub', 'sub');
    if (dt === undefined || broken !== undefined) return;
    assert.notEqual(dt.transceiver.sender.dtlsTransport?.state, 'connected', 'broken before it connected');
    Object.defineProperty(dt.transceiver.sender, 'runRtcp', { value: undefined });
    broken = dt;
  }, 1);
  try {
    await pub.publishTracks([{ kind: 'video' }]);
    await eventually(() => broken !== undefined, 'the subscriber DownTrack');
  } finally {
    clearInterval(breaker);
  }
  assert.deepEqual(checkSender(broken!.transceiver.sender), ['sender.runRtcp: expected function, got undefined']);
  await eventually(async () => (await svc.metric('scv_werift_adapter_failures_total')) === failuresBefore + 1, 'the failure counted');
  await eventually(() => svc.service.sfu.findRoom(room)?.byIdentity('sub') === undefined, 'the subscriber removed (its transport failed)', 20_000);
  assert.equal(broken!.transceiver.sender.dtlsTransport.state, 'closed');
  assert.equal(svc.service.sfu.stats.weriftAdapterFailures, failuresBefore + 1, 'once per transport');
  // The publisher is not affected.
  assert.ok(svc.service.sfu.findRoom(room)?.byIdentity('pub') !== undefined);
  await Promise.all([pub.close({ leave: true }), sub.close()]);
});

test('the failure log names what is missing', () => {
  const lines: string[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  );
  const stats = new MediaStats();
  failTransport(undefined, 'the send path of TR_x', ['dtlsTransport.srtp.localContext.srtpSessionSalt: expected buffer, got undefined'], log, stats);
  assert.equal(stats.weriftAdapterFailures, 1);
  assert.equal(lines.length, 1);
  const entry = JSON.parse(lines[0]!) as { level: number; msg: string; problems: string[] };
  assert.equal(entry.level, 50, 'an error');
  assert.match(entry.msg, /the send path of TR_x.*closing the transport/);
  assert.deepEqual(entry.problems, ['dtlsTransport.srtp.localContext.srtpSessionSalt: expected buffer, got undefined']);
  assert.deepEqual(checkReceiver({} as never), [], 'a receiver without our hook has nothing to check');
});

test("a closed DownTrack no longer passes the subscriber's PLIs upstream", async () => {
  const room = 'adapter-pli';
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  const [video] = await pub.publishTracks([{ kind: 'video', keyframeIntervalFrames: 100_000 }]);
  const rec = await sub.waitForTrackFrom('pub', 'video', { minPackets: 30, minKeyframes: 1 });
  await sleep(600); // past the upstream keyframe-request throttle
  const before1 = video!.plisReceived;
  await sub.sendPli(rec.trackSid);
  await eventually(() => video!.plisReceived > before1, 'the PLI at the publisher while subscribed');

  const track = videoTrackOf(room, 'pub')!;
  const dt = downTrackOf(room, 'pub', 'sub')!;
  let closedEvents = 0;
  dt.on('closed', () => closedEvents++);
  dt.close();
  dt.close();
  assert.equal(closedEvents, 1, "'closed' once");
  assert.ok(!track.subscribers.includes(dt), 'it left its PublishedTrack');

  await sleep(2_100); // past the subscriber's keyframe-request backoff as well
  const plis = video!.plisReceived;
  const requests = svc.service.sfu.stats.keyframeRequestsSent;
  const received = svc.service.sfu.stats.plisReceived;
  for (let i = 0; i < 3; i++) {
    await sub.sendPli(rec.trackSid);
    await sleep(300);
  }
  dt.transceiver.sender.onPictureLossIndication.execute();
  await sleep(700);
  assert.equal(svc.service.sfu.stats.plisReceived, received, 'the PLIs are not even counted as ours');
  assert.equal(svc.service.sfu.stats.keyframeRequestsSent, requests, 'no keyframe request upstream');
  assert.equal(video!.plisReceived, plis, 'nothing reached the publisher');
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});
