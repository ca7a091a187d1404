/**
 * Signaling limits against the real server, in one process and at the edge (media in a
 * worker process): a connection that never joins is closed with JOIN_TIMEOUT; messages over
 * the per-connection rate get RATE_LIMITED, and a client that keeps flooding is
 * disconnected; a subscriber "answer" that is really an offer gets INVALID_SDP and the
 * subscriber can still answer properly and receive media.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RTCPeerConnection } from 'werift';
import { LOOPBACK_ICE, peerConfig } from '../src/node-client/peer-config.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import type { Service } from '../src/service.ts';
import { rawSocket, type RawSocket } from './helpers/client.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

/** 1 s to join; 20 messages at once, then one a second (so refills never blur a count). */
const LIMITS = { SCV_JOIN_TIMEOUT: '1', SCV_SIGNALING_RATE: '1', SCV_SIGNALING_BURST: '20' };
const BURST = 20;

for (const mode of ['in one process', 'at the edge'] as const) {
  describe(`signaling limits ${mode}`, () => {
    let svc: TestService<Service | EdgeService>;
    let roomSeq = 0;
    before(async () => {
      svc = mode === 'at the edge' ? await TestService.startEdge(1, LIMITS) : await TestService.start(LIMITS);
    });
    after(() => svc.close());

    const joinMessage = async (identity: string, room = `limits-${++roomSeq}`) => ({
      type: 'join',
      id: 'j',
      protocol: 1,
      token: await svc.token(identity, room),
    });
    const joinedSocket = async (identity: string): Promise<RawSocket> => {
      const s = await rawSocket(svc.service.wsUrl);
      s.send(await joinMessage(identity));
      assert.equal((await s.nextJson()).type, 'joined');
      return s;
    };

    test('connections that never join are closed with JOIN_TIMEOUT; joined ones stay', async () => {
      const idle = await Promise.all(Array.from({ length: 20 }, () => rawSocket(svc.service.wsUrl)));
      // Talking is not joining: pings and a refused join do not stop the clock.
      idle[0]!.send({ type: 'ping', id: 1 });
      assert.equal((await idle[0]!.nextJson()).type, 'pong');
      idle[1]!.send({ type: 'join', id: 2, protocol: 1, token: 'forged' });
      assert.equal((await idle[1]!.nextJson()).code, 'UNAUTHORIZED');
      const member = await joinedSocket('stays');
      for (const s of idle) {
        const closed = await s.waitClose(5_000);
        assert.equal(closed.code, 1008);
        assert.equal(closed.reason, 'join timeout');
      }
      for (const s of idle) {
        // The last frame before the close says why.
        let last: Record<string, unknown> | undefined;
        for (;;) {
          try {
            last = await s.nextJson(100);
          } catch {
            break;
          }
        }
        assert.equal(last?.code, 'JOIN_TIMEOUT', JSON.stringify(last));
        assert.match(String(last?.message), /within 1 s/);
      }
      await sleep(500);
      assert.equal(member.closed, false, 'a joined connection is not timed out');
      member.send({ type: 'ping', id: 'still' });
      assert.equal((await member.nextJson()).type, 'pong');
      member.close();
    });

    test('messages over the rate get RATE_LIMITED with their id; the connection recovers', async () => {
      // Joined, so the join clock (1 s here) is out of the way.
      const s = await joinedSocket(`steady-${mode.length}`);
      await sleep(1_100); // the join's token is back: a full burst
      for (let i = 0; i < BURST + 10; i++) s.send({ type: 'ping', id: i });
      // Refusals are sent at once, so they may overtake the answers to earlier requests.
      const replies = (await Promise.all(Array.from({ length: BURST + 10 }, () => s.nextJson()))).sort((a, b) => Number(a.id) - Number(b.id));
      assert.deepEqual(
        replies.map((r) => `${String(r.id)} ${String(r.type)}`),
        Array.from({ length: BURST + 10 }, (_, i) => `${i} ${i < BURST ? 'pong' : 'error'}`),
      );
      for (const r of replies.slice(BURST)) {
        assert.equal(r.code, 'RATE_LIMITED');
        assert.match(String(r.message), /1 messages per second/);
      }
      // One message a second is allowed: after a pause the connection works again.
      await sleep(1_100);
      s.send({ type: 'ping', id: 'later' });
      assert.deepEqual(await s.nextJson(), { type: 'pong', id: 'later' });
      assert.equal(s.closed, false);
      s.close();
    });

    for (const joined of [false, true]) {
      test(`a client that keeps flooding ${joined ? 'after joining' : 'before joining'} is disconnected`, async () => {
        const s = joined ? await joinedSocket(`flooder-${mode.length}`) : await rawSocket(svc.service.wsUrl);
        for (let i = 0; i < 5 * BURST; i++) s.send({ type: 'ping', id: i });
        const closed = await s.waitClose(5_000);
        assert.equal(closed.code, 1008);
        assert.equal(closed.reason, 'rate limited');
        const frames: Record<string, unknown>[] = [];
        for (;;) {
          try {
            frames.push(await s.nextJson(100));
          } catch {
            break;
          }
        }
        const errors = frames.filter((f) => f.type === 'error');
        assert.ok(errors.length > 0 && errors.every((e) => e.code === 'RATE_LIMITED'), JSON.stringify(errors.slice(-3)));
        assert.match(String(errors.at(-1)!.message), /closing/);
        // At most a burst of pings was answered, and at most a burst of refusals sent (and the last word).
        assert.ok(frames.filter((f) => f.type === 'pong').length <= BURST + 1, `${frames.length} frames`);
        assert.ok(errors.length <= BURST + 1, `${errors.length} refusals`);
      });
    }

    test('a client that keeps sending faster than its rate, in small bursts, is disconnected', async () => {
      // 15 a second against 1 a second: each refill lets one through, and no burst is ever
      // refused in a row. The refusals still outrun their budget (a burst plus the rate).
      const s = await joinedSocket(`trickler-${mode.length}`);
      const started = performance.now();
      let sent = 0;
      while (!s.closed && performance.now() - started < 6_000) {
        for (let i = 0; i < 3; i++) s.send({ type: 'ping', id: sent++ });
        await sleep(200);
      }
      const closed = await s.waitClose(1_000);
      assert.equal(closed.code, 1008);
      assert.equal(closed.reason, 'rate limited');
      const elapsedS = (performance.now() - started) / 1000;
      assert.ok(elapsedS < 5, `closed after ${elapsedS.toFixed(1)} s and ${sent} pings`);
    });

    test('an offer sent as the subscriber answer gets INVALID_SDP and a fresh offer; a real answer to that brings media', async () => {
      const room = `answer-${++roomSeq}`;
      const pub = await svc.join('answer-pub', room);
      await pub.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
      const s = await rawSocket(svc.service.wsUrl);
      s.send(await joinMessage('answer-sub', room));
      assert.equal((await s.nextJson()).type, 'joined');
      let offer: Record<string, unknown>;
      do offer = await s.nextJson();
      while (offer.type !== 'offer');
      // Both offers: the server's own and one a client would make; neither is an answer.
      const clientPc = new RTCPeerConnection(peerConfig('subscriber', LOOPBACK_ICE));
      clientPc.addTransceiver('video', { direction: 'recvonly' });
      clientPc.addTransceiver('audio', { direction: 'recvonly' });
      await clientPc.setLocalDescription(await clientPc.createOffer());
      const pc = new RTCPeerConnection(peerConfig('subscriber', LOOPBACK_ICE));
      try {
        const notAnswers = [String(offer.sdp), clientPc.localDescription!.sdp];
        for (const [i, sdp] of notAnswers.entries()) {
          s.send({ type: 'answer', id: `bad${i}`, target: 'subscriber', sdp });
          let reply: Record<string, unknown>;
          do reply = await s.nextJson();
          while (reply.type === 'candidate');
          assert.equal(reply.type, 'error', JSON.stringify(reply).slice(0, 300));
          assert.equal(reply.id, `bad${i}`);
          assert.equal(reply.code, 'INVALID_SDP');
          assert.match(String(reply.message), /is an offer \(a=setup:actpass\), not an answer/);
          // The refused offer is withdrawn; a fresh one follows the error.
          do offer = await s.nextJson();
          while (offer.type !== 'offer');
        }

        let packets = 0;
        pc.onTrack.subscribe((track) => track.onReceiveRtp.subscribe(() => packets++));
        await pc.setRemoteDescription({ type: 'offer', sdp: String(offer.sdp) });
        await pc.setLocalDescription(await pc.createAnswer());
        await eventually(() => pc.iceGatheringState === 'complete', 'answer candidates gathered');
        const answer = pc.localDescription!.sdp;
        let reply: Record<string, unknown>;
        s.send({ type: 'answer', id: 'good', target: 'subscriber', sdp: answer });
        do reply = await s.nextJson();
        while (reply.type === 'candidate');
        assert.deepEqual(reply, { type: 'ack', id: 'good' });
        await eventually(() => packets >= 50, `media after the real answer (${packets} packets)`, 15_000);
      } finally {
        s.close();
        await clientPc.close().catch(() => {});
        await pc.close().catch(() => {});
      }
    });
  });
}
