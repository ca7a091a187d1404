/**
 * A subscriber connection at its most m-lines (2 × SCV_MAX_PARTICIPANTS + 2: 8 here, with
 * a room limit of 3) does not drop what does not fit: a track that needs a ninth m-line
 * waits, and arrives on the first m-line of its kind that frees up, once an answer has
 * confirmed it free. No offer ever holds more than the limit.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { MessageOf, TestClient } from './helpers/client.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

const MAX_SECTIONS = 2 * 3 + 2;

let svc: TestService;
before(async () => {
  svc = await TestService.start({ SCV_MAX_PARTICIPANTS: '3' });
});
after(async () => {
  await svc.close();
});

const sectionsOf = (sdp: string) => sdp.match(/^m=/gm)?.length ?? 0;
const offersOf = (c: TestClient) => c.messages.filter((m): m is MessageOf<'offer'> => m.type === 'offer');
/** Source ids of the live tracks `rx` receives intact payloads on. */
const receiving = (rx: TestClient) => new Set(rx.remoteTracks.filter((t) => !t.ended && t.verified > 0).flatMap((t) => [...t.sourceIds]));

test('a track past the m-line limit waits for a free m-line of its kind, then arrives', async () => {
  const room = 'limit';
  const first = await svc.join('first', room);
  const firstTracks = await first.publishTracks([1, 2, 3, 4, 5].map((sourceId) => ({ kind: 'audio' as const, sourceId })));
  const second = await svc.join('second', room);
  await second.publishTracks([6, 7, 8, 9].map((sourceId) => ({ kind: 'audio' as const, sourceId })));
  const sub = await svc.join('sub', room, { grants: ['subscribe'] });

  // Eight of the nine fit; the ninth waits, whichever it is.
  await eventually(() => receiving(sub).size === MAX_SECTIONS, `the subscriber to receive ${MAX_SECTIONS} tracks (has ${[...receiving(sub)]})`, 20_000);
  await sleep(1_000);
  const fitted = receiving(sub);
  assert.equal(fitted.size, MAX_SECTIONS, 'no ninth track while every m-line is taken');
  const waiting = [1, 2, 3, 4, 5, 6, 7, 8, 9].find((id) => !fitted.has(id))!;

  // One of first's tracks that does reach the subscriber ends: the waiting track takes its m-line.
  const ending = firstTracks.find((t) => t.sourceId !== waiting)!;
  await first.unpublish(ending);
  await eventually(() => receiving(sub).has(waiting), `the waiting track (source ${waiting}) to arrive`, 20_000);
  const now = receiving(sub);
  assert.ok(!now.has(ending.sourceId), 'the ended track is gone');
  assert.equal(now.size, MAX_SECTIONS);
  for (const offer of offersOf(sub)) assert.ok(sectionsOf(offer.sdp) <= MAX_SECTIONS, `an offer with ${sectionsOf(offer.sdp)} m-lines`);
  assert.equal(sub.failures.length, 0, sub.failures.join('; '));
});
