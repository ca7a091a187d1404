/**
 * Ownership, end to end (docs/architecture.md#ownership): a room with live media (three
 * participants, each publishing audio and video and receiving the others) is closed by
 * its owner. Afterwards nothing it owned is left: no room or participant in the SFU, no
 * listener on the objects that were in it, no UDP socket or TCP connection more than before the call, and no
 * timer still pending of all those started during the call, on the server's side or the
 * clients' (the clients are closed too). Every `close()` is called a second time on the
 * way and must be harmless.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Participant } from '../src/sfu/participant.ts';
import type { Room } from '../src/sfu/room.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

/** Timers started after `mark()`, until they fire or are cleared, with where they were started. */
class TimerLedger {
  private readonly pending = new Map<unknown, string>();
  private tracking = false;
  private readonly real = { setTimeout, clearTimeout, setInterval, clearInterval };

  install(): void {
    const { pending, real } = this;
    const ledger = this;
    globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const t = real.setTimeout(
        (...a: unknown[]) => {
          pending.delete(t);
          fn(...a);
        },
        ms,
        ...args,
      );
      if (ledger.tracking) pending.set(t, new Error().stack ?? '');
      return t;
    }) as typeof setTimeout;
    globalThis.setInterval = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
      const t = real.setInterval(fn, ms, ...args);
      if (ledger.tracking) pending.set(t, new Error().stack ?? '');
      return t;
    }) as typeof setInterval;
    const clear = (t: unknown) => {
      pending.delete(t);
      real.clearTimeout(t as NodeJS.Timeout);
    };
    globalThis.clearTimeout = clear as typeof clearTimeout;
    globalThis.clearInterval = clear as typeof clearInterval;
  }

  uninstall(): void {
    Object.assign(globalThis, this.real);
  }

  mark(): void {
    this.pending.clear();
    this.tracking = true;
  }

  /** Stacks of the timers still pending, trimmed to the frames that say whose they are. */
  leftovers(): string[] {
    return [...this.pending.values()].map((stack) =>
      stack
        .split('\n')
        .slice(2, 7)
        .map((l) => l.trim().replace(/^at /, '').replace(/file:\/\/\/work\/[^/]+\//, ''))
        .join(' ← '),
    );
  }
}

/** Open UDP sockets (ICE) and TCP connections (WebSockets) of this process. */
const sockets = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'TCPSocketWrap').length;

const ledger = new TimerLedger();
let svc: TestService;

before(async () => {
  ledger.install();
  svc = await TestService.start();
});
after(async () => {
  await svc.close();
  ledger.uninstall();
});

test('closing a room with live media leaves no participant, listener, socket or timer behind', async () => {
  const socketsBefore = sockets();
  ledger.mark();
  const room = 'ownership';
  const names = ['ann', 'ben', 'cat'];
  const clients = await Promise.all(names.map((n) => svc.join(n, room)));
  for (const c of clients) {
    await c.publish('audio');
    await c.publish('video');
  }
  for (const c of clients) {
    for (const other of names.filter((n) => n !== c.identity)) {
      await c.waitForTrackFrom(other, 'video', { minPackets: 30, timeoutMs: 20_000 });
      await c.waitForTrackFrom(other, 'audio', { minPackets: 30, timeoutMs: 20_000 });
    }
  }
  assert.ok(sockets() >= socketsBefore + 3 * 2 + 3, `the call holds sockets: ${process.getActiveResourcesInfo().join(',')}`);

  const sfu = svc.service.sfu;
  const r: Room = sfu.getRoom(room);
  const participants: Participant[] = r.all();
  assert.equal(participants.length, 3);
  const tracks = participants.flatMap((p) => [...p.published.values()]);
  assert.equal(tracks.length, 6);
  assert.ok(tracks.every((t) => t.subscriberCount === 2), 'each track goes to both others');

  r.close('room_closed');
  r.close('room_closed');
  for (const p of participants) p.close('room_closed');
  for (const t of tracks) t.close();

  assert.equal(sfu.findRoom(room), undefined);
  assert.equal(sfu.roomCount, 0);
  assert.equal(sfu.participantCount(), 0);
  assert.ok(participants.every((p) => p.closed));
  assert.ok(tracks.every((t) => t.subscriberCount === 0), 'no track writes to a down track any more');
  for (const p of participants) {
    for (const event of ['trackPublished', 'trackUnpublished', 'trackMuted', 'closed']) assert.equal(p.listenerCount(event), 0, `${p.identity} still has a "${event}" listener`);
  }
  for (const event of ['participantJoined', 'participantLeft', 'trackPublished', 'trackUnpublished', 'closed']) {
    assert.equal(r.listenerCount(event), 0, `the room still has a "${event}" listener`);
  }

  // Every client hears why and closes its side too.
  for (const c of clients) await c.waitForEvent('left', (m) => m.reason === 'room_closed');
  await Promise.all(clients.map((c) => c.close()));
  await eventually(() => sockets() <= socketsBefore, `sockets back to ${socketsBefore} (now ${sockets()})`);
  // Timers that were running when everything closed get a moment to be cleared by their owners' close.
  await sleep(1_500);
  assert.deepEqual(ledger.leftovers(), [], 'timers still pending after the room and its clients closed');
});
