/**
 * Drives the call page (web/) in headless Chromium for test/browser.test.ts and
 * bench/join-time.ts: launches Debian's chromium with a fake camera and microphone, opens
 * one page per participant (each in a fresh browser context: its own profile state), and
 * reads the page's test hook `window.__scv` (web/test-hook.ts).
 */
import { spawnSync } from 'node:child_process';
import { chromium, type Browser, type BrowserContext, type Page, type WebSocketRoute } from 'playwright-core';
import type { ParticipantStats, TrackStats } from '../../client/stats.ts';
import { eventually } from '../helpers/service.ts';
import type { HookE2eeError, HookParticipant, ScvTestHook } from '../../web/test-hook.ts';

export const CHROMIUM_PATH = process.env.TEST_CHROMIUM ?? '/usr/bin/chromium';

/** Flags for a quiet, sandbox-free headless browser that may use loopback ICE and fake media. */
export interface ChromiumOptions {
  /** The fake permission prompt refuses camera and microphone. */
  denyMedia?: boolean;
  /** A .y4m file the fake camera plays in a loop instead of its own pattern (see `writeDetailedCameraFile`). */
  cameraFile?: string;
}

export function chromiumArgs(opts: ChromiumOptions = {}): string[] {
  return [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    // "=deny" makes the fake permission prompt refuse instead of allow.
    opts.denyMedia === true ? '--use-fake-ui-for-media-stream=deny' : '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    ...(opts.cameraFile === undefined ? [] : [`--use-file-for-fake-video-capture=${opts.cameraFile}`]),
  ];
}

export function launchChromium(opts: ChromiumOptions = {}): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: chromiumArgs(opts) });
}

/**
 * Writes two seconds of 640×480 30 fps video with fresh noise in every frame, for the fake
 * camera. Chromium's own fake camera pattern compresses to ~0.5 Mbit/s, so its encoder
 * never fills the uplink and the estimate only grows as far as its first probes reach;
 * a real camera fills it, and so does this.
 */
export function writeDetailedCameraFile(file: string): void {
  const r = spawnSync(
    'ffmpeg',
    ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=640x480:rate=30', '-vf', 'noise=alls=25:allf=t', '-t', '2', '-pix_fmt', 'yuv420p', file],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`ffmpeg could not write ${file}: ${r.error?.message ?? r.stderr}`);
}

type Hooked = typeof globalThis & { __scv: ScvTestHook };

export interface OpenOptions {
  /** Service base URL, e.g. http://127.0.0.1:34567 */
  baseUrl: string;
  room: string;
  name: string;
  /** Extra query parameters (e.g. token). */
  query?: Record<string, string>;
  /** Join from the URL (`autojoin=1`) instead of leaving the form for a click. */
  autojoin?: boolean;
  /** Typed into the passphrase field, then Join is clicked (an end-to-end encrypted call; never in the URL). */
  passphrase?: string;
  /** Keep every RTCPeerConnection the page creates, for `peerConnections()` (test instrumentation, not the SDK's). */
  trackPeerConnections?: boolean;
}

/** One RTCPeerConnection of a page: its state and each transceiver's mid and negotiated direction. */
export interface PeerConnectionView {
  connectionState: string;
  transceivers: { mid: string | null; currentDirection: string | null }[];
}

/** The little of the page's RTCPeerConnection these read (this project's Node typings have no DOM). */
interface PageConnection {
  connectionState: string;
  getTransceivers(): { mid: string | null; currentDirection: string | null }[];
}
type Tracked = typeof globalThis & { __pcs?: PageConnection[]; RTCPeerConnection: new (config?: unknown) => PageConnection };

/**
 * One participant's tab. Its signaling WebSocket runs through Playwright's WebSocket
 * routing so a test can cut it like a network drop would (`dropSignaling`).
 */
export class CallPage {
  readonly page: Page;
  readonly name: string;
  private readonly context: BrowserContext;
  private socket: { page: WebSocketRoute; server: WebSocketRoute } | undefined;
  private blocked = false;
  readonly errors: string[] = [];

  private constructor(context: BrowserContext, page: Page, name: string) {
    this.context = context;
    this.page = page;
    this.name = name;
  }

  static async open(browser: Browser, opts: OpenOptions): Promise<CallPage> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const call = new CallPage(context, page, opts.name);
    page.on('pageerror', (err) => call.errors.push(err.message));
    if (opts.trackPeerConnections === true) {
      await page.addInitScript(() => {
        const g = globalThis as Tracked;
        const Original = g.RTCPeerConnection;
        g.__pcs = [];
        g.RTCPeerConnection = class extends Original {
          constructor(config?: unknown) {
            super(config);
            g.__pcs!.push(this);
          }
        };
      });
    }
    await page.routeWebSocket(/\/video\/ws$/, (ws) => {
      if (call.blocked) {
        ws.close({ code: 1011, reason: 'blocked by test' });
        return;
      }
      call.socket = { page: ws, server: ws.connectToServer() };
    });
    const autojoin = opts.autojoin !== false && opts.passphrase === undefined;
    const query = new URLSearchParams({ room: opts.room, name: opts.name, ...(autojoin ? { autojoin: '1' } : {}), ...opts.query });
    await page.goto(`${opts.baseUrl}/?${query}`);
    if (opts.passphrase !== undefined && opts.autojoin !== false) {
      await page.fill('#passphrase-input', opts.passphrase);
      await page.click('#join-button');
    }
    return call;
  }

  /** Cuts the signaling socket on both ends, as a network drop would; `block` refuses new ones too. */
  async dropSignaling(opts: { block?: boolean } = {}): Promise<void> {
    this.blocked = opts.block === true;
    const s = this.socket;
    this.socket = undefined;
    if (s === undefined) throw new Error(`${this.name} has no signaling socket to drop`);
    await Promise.all([s.page.close({ code: 4000, reason: 'dropped by test' }), s.server.close({ code: 4000, reason: 'dropped by test' })]);
  }

  unblockSignaling(): void {
    this.blocked = false;
  }

  state(): Promise<string> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.state());
  }

  states(): Promise<string[]> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.states());
  }

  localSid(): Promise<string | undefined> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.localSid());
  }

  participants(): Promise<HookParticipant[]> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.participants());
  }

  stats(): Promise<ParticipantStats[]> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.stats());
  }

  timings(): Promise<{ joinClicked: number | undefined; firstRemoteFrame: number | undefined }> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.timings());
  }

  e2ee(): Promise<{ enabled: boolean; api: string | undefined; keyIndex: number | undefined }> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.e2ee());
  }

  e2eeErrors(): Promise<HookE2eeError[]> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.e2eeErrors());
  }

  recording(): Promise<boolean> {
    return this.page.evaluate(() => (globalThis as Hooked).__scv.recording());
  }

  /** What we receive of the participant named `name` (by display name), per kind. */
  async received(name: string): Promise<{ video: TrackStats | undefined; audio: TrackStats | undefined }> {
    const [stats, people] = await Promise.all([this.stats(), this.participants()]);
    const sid = people.find((p) => p.name === name)?.sid;
    const s = stats.find((x) => !x.local && x.participantSid === sid);
    return { video: s?.tracks.find((t) => t.kind === 'video'), audio: s?.tracks.find((t) => t.kind === 'audio') };
  }

  /** The page's PeerConnections that are not closed (needs `trackPeerConnections`). */
  peerConnections(): Promise<PeerConnectionView[]> {
    return this.page.evaluate(() =>
      ((globalThis as Tracked).__pcs ?? [])
        .filter((pc) => pc.connectionState !== 'closed')
        .map((pc) => ({
          connectionState: pc.connectionState,
          transceivers: pc.getTransceivers().map((t) => ({ mid: t.mid, currentDirection: t.currentDirection })),
        })),
    );
  }

  /** What we send. */
  async sent(): Promise<ParticipantStats | undefined> {
    return (await this.stats()).find((s) => s.local);
  }

  /** Idempotent enough for `after` hooks: closing a closed context is a no-op. */
  close(): Promise<void> {
    return this.context.close();
  }
}

/**
 * Waits until `rx` decodes `from`'s video (frames grow by `minFrames`, width > 0) and
 * receives their audio (20 more packets); returns the frames and width it got to.
 */
export async function assertReceives(rx: CallPage, from: string, minFrames = 10, timeoutMs = 20_000): Promise<{ frames: number; width: number }> {
  const start = await rx.received(from);
  const f0 = start.video?.frames ?? 0;
  const a0 = start.audio?.packets ?? 0;
  let last = start;
  await eventually(
    async () => {
      last = await rx.received(from);
      return (last.video?.frames ?? 0) >= f0 + minFrames && (last.video?.frameWidth ?? 0) > 0 && (last.audio?.packets ?? 0) >= a0 + 20;
    },
    `${rx.name} to decode ${from}'s video and receive their audio (start ${JSON.stringify(start)}, last ${JSON.stringify(last)})`,
    timeoutMs,
  );
  return { frames: last.video?.frames ?? 0, width: last.video?.frameWidth ?? 0 };
}
