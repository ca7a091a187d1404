/**
 * Ownership, end to end (docs/architecture.md#ownership): a room with live media (three
 * participants, each publishing audio and video and receiving the others) is closed by
 * its owner. Afterwards nothing it owned is left: no room or participant in the SFU; every
 * DownTrack that was forwarding is closed; none of the SFU's observers is left on the
 * werift events it subscribed to (each subscriber-side sender's PLI, NACK and RTCP events,
 * each publisher-side track's RTP and its receiver's packet-lost event), counted as soon
 * as the close returns and again once the room's PeerConnections have closed, which they
 * all must; no UDP socket or TCP connection more than before the call, and no timer still
 * pending of all those started during the call, on the server's side or the clients' (the
 * clients are closed too). Every `close()` is called a second time on the way and must be
 * harmless.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RTCPeerConnection, RTCRtpTransceiver, type MediaStreamTrack } from 'werift';
import type { DownTrack } from '../src/sfu/down-track.ts';
import type { Participant } from '../src/sfu/participant.ts';
import type { PublishedTrack } from '../src/sfu/published-track.ts';
import type { Room } from '../src/sfu/room.ts';
import type { RtcTransport } from '../src/sfu/rtc-transport.ts';
import type { SubscriberConnection } from '../src/sfu/subscriber-connection.ts';
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

/**
 * A private field of an SFU object: no accessor exposes a participant's transports or a
 * published track's werift transceiver. Fails, rather than checking nothing, if it is gone.
 */
function field<T>(obj: object, name: string): T {
  const value = (obj as Record<string, unknown>)[name];
  assert.ok(value !== undefined && value !== null, `${obj.constructor.name}.${name} is gone: this test reads it`);
  return value as T;
}

/** A werift (rx.mini) Event: `length` is how many observers it calls, `ended` whether werift completed it (which drops them all). */
interface WeriftEvent {
  readonly length: number;
  readonly ended: boolean;
}

/** One werift event the SFU subscribed to once, and its observer count before the room closed. */
interface Watched {
  what: string;
  event: WeriftEvent;
  before: number;
}

const watch = (what: string, event: WeriftEvent): Watched => ({ what, event, before: event.length });

/** What is wrong with `w` now if the SFU's one observer is not gone from it. */
function leftover(w: Watched): string | undefined {
  if (w.event.ended) return `${w.what}: werift ended the event before the SFU let go of it (the count says nothing)`;
  const after = w.event.length;
  return after === w.before - 1 ? undefined : `${w.what}: ${w.before} observers before, ${after} after (expected ${w.before - 1})`;
}

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

test('closing a room with live media leaves no participant, DownTrack, observer on werift, open PeerConnection, socket or timer behind', async () => {
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

  // What the room holds of werift's, taken before the close.
  const pcs = participants.flatMap((p) => {
    const publisher = field<RtcTransport>(p, 'publisher');
    const subscriber = field<SubscriberConnection>(p, 'receiving').transport;
    assert.notEqual(publisher, subscriber, `${p.identity} has separate publisher and subscriber transports`);
    return [publisher.pc, subscriber.pc].map((pc) => ({ what: `${p.identity}'s ${pc === publisher.pc ? 'publisher' : 'subscriber'} PeerConnection`, pc }));
  });
  for (const { what, pc } of pcs) {
    assert.ok(pc instanceof RTCPeerConnection);
    assert.equal(pc.connectionState, 'connected', what);
  }
  const downTracks = new Map<PublishedTrack, readonly DownTrack[]>(tracks.map((t) => [t, t.subscribers]));
  const closedDownTracks = new Set<DownTrack>();
  const watched = new Map<PublishedTrack, Watched[]>();
  for (const t of tracks) {
    const transceiver = field<RTCRtpTransceiver>(t, 'transceiver');
    assert.ok(transceiver instanceof RTCRtpTransceiver);
    const [media, ...more] = transceiver.receiver.tracks as MediaStreamTrack[];
    assert.ok(media !== undefined && more.length === 0, `${t.sid} is one werift track`);
    const list = [watch(`${t.sid} onReceiveRtp`, media.onReceiveRtp), watch(`${t.sid} receiver onPacketLost`, transceiver.receiver.onPacketLost)];
    const dts = downTracks.get(t)!;
    assert.equal(dts.length, 2);
    for (const dt of dts) {
      dt.once('closed', () => closedDownTracks.add(dt));
      const s = dt.transceiver.sender;
      const to = `${t.sid} → ${dt.subscriberSid} sender`;
      list.push(watch(`${to} onPictureLossIndication`, s.onPictureLossIndication), watch(`${to} onGenericNack`, s.onGenericNack), watch(`${to} onRtcp`, s.onRtcp));
    }
    watched.set(t, list);
  }
  const allDownTracks = [...downTracks.values()].flat();
  assert.equal(new Set(allDownTracks).size, 12, 'six tracks to two subscribers each');
  assert.equal(new Set(allDownTracks.map((dt) => dt.transceiver.sender)).size, 12, 'a sender per DownTrack');

  r.close('room_closed');
  r.close('room_closed');
  for (const p of participants) p.close('room_closed');
  for (const t of tracks) t.close();
  // Counted as soon as the close returns and again once the PeerConnections have closed;
  // leftover() refuses an event werift has ended, which drops every observer, the SFU's or not.
  const leftAtClose = [...watched.values()].flat().flatMap((w) => leftover(w) ?? []);

  assert.equal(sfu.findRoom(room), undefined);
  assert.equal(sfu.roomCount, 0);
  assert.equal(sfu.participantCount(), 0);
  assert.ok(participants.every((p) => p.closed));
  const open = allDownTracks.filter((dt) => !closedDownTracks.has(dt));
  assert.deepEqual(open.map((dt) => `${dt.track.sid} → ${dt.subscriberSid}`), [], 'DownTracks not closed');
  assert.deepEqual(leftAtClose, [], 'observers the SFU left on werift events');
  await eventually(() => pcs.every(({ pc }) => pc.connectionState === 'closed'), "the room's six PeerConnections closed");
  assert.deepEqual([...watched.values()].flat().flatMap((w) => leftover(w) ?? []), [], 'observers on werift events once the PeerConnections closed');

  // Every client hears why and closes its side too.
  for (const c of clients) await c.waitForEvent('left', (m) => m.reason === 'room_closed');
  await Promise.all(clients.map((c) => c.close()));
  await eventually(() => sockets() <= socketsBefore, `sockets back to ${socketsBefore} (now ${sockets()})`);
  // Timers that were running when everything closed get a moment to be cleared by their owners' close.
  await sleep(1_500);
  assert.deepEqual(ledger.leftovers(), [], 'timers still pending after the room and its clients closed');
});
