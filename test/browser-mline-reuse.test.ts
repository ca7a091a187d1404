/**
 * Reused subscriber m-lines in real Chromium: a viewer page stays in a room while three
 * other pages, one after the other, join, publish camera and microphone, and leave. The
 * viewer decodes each newcomer's video and receives its audio, although every newcomer's
 * tracks arrive on the m-lines the previous one's used (the server reuses an inactive
 * transceiver of the same kind, docs/signaling.md): its subscriber connection never holds
 * more than one audio and one video m-line.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { buildWeb } from '../scripts/build-web.ts';
import { assertReceives, CallPage, launchChromium, type PeerConnectionView } from './browser/call-page.ts';
import { eventually, TestService } from './helpers/service.ts';

let svc: TestService;
let browser: Browser;
const pages: CallPage[] = [];

before(async () => {
  await buildWeb();
  svc = await TestService.start();
  browser = await launchChromium();
});

after(async () => {
  await Promise.all(pages.map((p) => p.close().catch(() => {})));
  await browser?.close();
  await svc?.close();
});

async function join(room: string, name: string, trackPeerConnections = false): Promise<CallPage> {
  const p = await CallPage.open(browser, { baseUrl: svc.httpUrl, room, name, trackPeerConnections });
  pages.push(p);
  await eventually(async () => (await p.state()) === 'connected', `${name} to connect`, 15_000);
  return p;
}

/** The viewer's subscriber connection: the one whose m-lines only receive (or are inactive). */
function subscriberOf(pcs: PeerConnectionView[]): PeerConnectionView | undefined {
  return pcs.find((pc) => pc.transceivers.length > 0 && pc.transceivers.every((t) => t.currentDirection === 'recvonly' || t.currentDirection === 'inactive'));
}

test('a viewer decodes three publishers in turn on the same two reused m-lines', async () => {
  const room = 'reuse';
  const viewer = await join(room, 'Viewer', true);
  const seenMids = new Set<string>();
  for (const name of ['First', 'Second', 'Third']) {
    const publisher = await join(room, name);
    const got = await assertReceives(viewer, name, 15, 30_000);
    assert.ok(got.width > 0, `the viewer decodes ${name}'s video`);
    const sub = subscriberOf(await viewer.peerConnections());
    assert.ok(sub !== undefined, 'the viewer has a subscriber connection');
    for (const t of sub.transceivers) if (t.mid !== null) seenMids.add(t.mid);
    assert.ok(sub.transceivers.length <= 2, `${name}: the subscriber connection holds ${sub.transceivers.length} m-lines (${JSON.stringify(sub.transceivers)})`);
    await publisher.page.click('#leave-button');
    await eventually(async () => (await viewer.participants()).every((p) => p.name !== name), `the viewer to see ${name} leave`, 15_000);
    await publisher.close();
  }
  assert.equal(seenMids.size, 2, `three publishers came through on the same two mids (${[...seenMids].join(', ')})`);
});
