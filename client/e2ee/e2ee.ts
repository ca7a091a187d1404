/**
 * The page side of end-to-end encryption (docs/e2ee.md): one transform worker
 * (./worker.ts, bundled as web/dist/e2ee-worker.js) per Room, attached to every sender
 * and receiver of that Room's PeerConnections, and the keys it holds.
 *
 * Two browser APIs put encoded frames through the worker:
 * - `RTCRtpScriptTransform` (standard; Safari, Firefox, Chromium ≥ 141):
 *   `sender.transform = new RTCRtpScriptTransform(worker, { operation, codec, id })`;
 * - Chromium's encoded insertable streams: the PeerConnection is created with
 *   `encodedInsertableStreams: true`, and each sender's and receiver's
 *   `createEncodedStreams()` are transferred to the worker in a `streams` message.
 */
import { MAX_KEYS } from './frame-crypto.ts';

/** Where a key comes from: a passphrase shared out of band, or raw AES key material (16, 24 or 32 bytes). */
export type E2eeKey = { passphrase: string } | { key: Uint8Array };

/** Which browser API carries the frames through the worker. */
export type E2eeApi = 'script-transform' | 'insertable-streams';

/** `Room.connect`'s `e2ee` option: `{ passphrase }` or `{ key }`, and optionally where the worker is. */
export interface E2eeOptions {
  /** Shared out of band; the key is derived from it and the room's name (PBKDF2, docs/e2ee.md). */
  passphrase?: string;
  /** Raw AES key material instead (16, 24 or 32 bytes). */
  key?: Uint8Array;
  /** The key slot this first key goes in, and that senders use (default 0). */
  keyIndex?: number;
  /** The worker's script (default: `e2ee-worker.js` next to the SDK bundle). */
  workerUrl?: string | URL;
  /** Force one browser API (default: `RTCRtpScriptTransform` where the browser has it). */
  api?: E2eeApi;
}

/** What the `e2eeError` event carries: a frame that did not decrypt, and whose it was. */
export interface E2eeErrorInfo {
  /** `auth-failed`: wrong key or altered frame; `unknown-key`: no key in the slot the frame names; `too-short`: not an encrypted frame. */
  reason: 'auth-failed' | 'unknown-key' | 'too-short';
  /** The key slot the frame named, when it named one. */
  keyIndex: number | undefined;
  /** The subscriber m-line the frame came on (the SDK maps it to a participant and track). */
  mid: string | undefined;
}

/** Chromium's non-standard encoded insertable streams. */
interface EncodedStreams {
  readable: ReadableStream;
  writable: WritableStream;
}
type WithEncodedStreams = { createEncodedStreams?: () => EncodedStreams };

/** The API this browser offers, `preferred` if it has that one; undefined when it has neither. */
export function e2eeApi(preferred?: E2eeApi): E2eeApi | undefined {
  const script = typeof RTCRtpScriptTransform !== 'undefined';
  const streams = typeof RTCRtpSender !== 'undefined' && typeof (RTCRtpSender.prototype as WithEncodedStreams).createEncodedStreams === 'function';
  if (preferred === 'insertable-streams' && streams) return preferred;
  if (preferred === 'script-transform' && script) return preferred;
  return script ? 'script-transform' : streams ? 'insertable-streams' : undefined;
}

/** The worker's URL when the application did not give one: next to this SDK bundle. */
function defaultWorkerUrl(): URL {
  return new URL('./e2ee-worker.js', import.meta.url);
}

export function validKeyIndex(index: number): boolean {
  return Number.isInteger(index) && index >= 0 && index < MAX_KEYS;
}

/** One Room's worker, its keys, and the transforms attached to its senders and receivers. */
export class E2eeSession {
  readonly api: E2eeApi;
  private readonly worker: Worker;
  private readonly roomName: string;
  private readonly attached = new WeakSet<RTCRtpSender | RTCRtpReceiver>();
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }[]>();
  /** Slots that hold a key, and the one senders use. */
  private readonly installed = new Set<number>();
  private current = 0;

  constructor(opts: { api: E2eeApi; roomName: string; workerUrl?: string | URL; onDecryptError: (info: E2eeErrorInfo) => void }) {
    this.api = opts.api;
    this.roomName = opts.roomName;
    this.worker = new Worker(opts.workerUrl ?? defaultWorkerUrl(), { name: 'scv-e2ee' });
    this.worker.onmessage = (ev: MessageEvent) => {
      const msg = ev.data as { type?: string; index?: number; message?: string; reason?: E2eeErrorInfo['reason']; keyIndex?: number; id?: string };
      if (msg.type === 'keySet' || msg.type === 'keyError') {
        const index = Number(msg.index);
        if (msg.type === 'keySet') this.installed.add(index);
        for (const w of this.waiting.get(index)?.splice(0) ?? []) {
          if (msg.type === 'keySet') w.resolve();
          else w.reject(new Error(msg.message ?? 'the key could not be installed'));
        }
      } else if (msg.type === 'decryptError') {
        opts.onDecryptError({ reason: msg.reason ?? 'auth-failed', keyIndex: msg.keyIndex, mid: msg.id });
      }
    };
  }

  /** Extra RTCPeerConnection settings the API needs. */
  get peerConnectionConfig(): Record<string, unknown> {
    return this.api === 'insertable-streams' ? { encodedInsertableStreams: true } : {};
  }

  /** True once a key is installed in the slot senders use. */
  get canEncrypt(): boolean {
    return this.installed.has(this.current);
  }

  get keyIndex(): number {
    return this.current;
  }

  /** Derives (passphrase) or imports (raw key) a key into slot `index`; resolves once the worker holds it. */
  setKey(key: E2eeKey, index: number): Promise<void> {
    if (!validKeyIndex(index)) return Promise.reject(new Error(`key index must be an integer 0…${MAX_KEYS - 1}`));
    if ('passphrase' in key && key.passphrase === '') return Promise.reject(new Error('the passphrase is empty'));
    const done = new Promise<void>((resolve, reject) => {
      let list = this.waiting.get(index);
      if (list === undefined) this.waiting.set(index, (list = []));
      list.push({ resolve, reject });
    });
    if ('passphrase' in key) {
      this.worker.postMessage({ type: 'setKey', index, passphrase: key.passphrase, room: this.roomName });
    } else {
      this.worker.postMessage({ type: 'setKey', index, key: Uint8Array.from(key.key) });
    }
    return done;
  }

  /** Senders encrypt with slot `index` from now on. */
  useKey(index: number): void {
    if (!validKeyIndex(index)) throw new Error(`key index must be an integer 0…${MAX_KEYS - 1}`);
    this.current = index;
    this.worker.postMessage({ type: 'useKey', index });
  }

  /** Every frame `sender` sends is encrypted first. Call right after `addTransceiver`. */
  attachSender(sender: RTCRtpSender, kind: 'audio' | 'video'): void {
    this.attach(sender, 'encrypt', kind, undefined);
  }

  /** Every frame `receiver` gets is decrypted before the decoder sees it. Call in `ontrack`. */
  attachReceiver(receiver: RTCRtpReceiver, kind: 'audio' | 'video', mid: string | null): void {
    this.attach(receiver, 'decrypt', kind, mid ?? undefined);
  }

  private attach(end: RTCRtpSender | RTCRtpReceiver, operation: 'encrypt' | 'decrypt', kind: 'audio' | 'video', id: string | undefined): void {
    if (this.attached.has(end)) return;
    this.attached.add(end);
    // The worker reads the codec from each frame's metadata; this is only its fallback.
    const codec = kind === 'audio' ? 'audio/opus' : 'video/VP8';
    if (this.api === 'script-transform') {
      end.transform = new RTCRtpScriptTransform(this.worker, { operation, codec, id });
      return;
    }
    const streams = (end as WithEncodedStreams).createEncodedStreams?.();
    if (streams === undefined) throw new Error('this browser has no encoded insertable streams');
    this.worker.postMessage({ type: 'streams', operation, codec, id, readable: streams.readable, writable: streams.writable }, [
      streams.readable as unknown as Transferable,
      streams.writable as unknown as Transferable,
    ]);
  }

  close(): void {
    this.worker.terminate();
    for (const list of this.waiting.values()) for (const w of list.splice(0)) w.reject(new Error('end-to-end encryption was closed'));
  }
}

/**
 * E2EE rooms negotiate VP8 (docs/e2ee.md): its clear header is known, and unlike H.264 or
 * AV1 its packetizer does not parse the frame. VP9 (no clear bytes needed) stays as a
 * fallback; retransmission and redundancy codecs stay as they are.
 */
export function e2eeVideoCodecs(capabilities: RTCRtpCapabilities | null): RTCRtpCodec[] | undefined {
  if (capabilities === null) return undefined;
  const name = (c: RTCRtpCodec) => c.mimeType.toLowerCase();
  const vp8 = capabilities.codecs.filter((c) => name(c) === 'video/vp8');
  if (vp8.length === 0) return undefined;
  const vp9 = capabilities.codecs.filter((c) => name(c) === 'video/vp9');
  const helpers = capabilities.codecs.filter((c) => ['video/rtx', 'video/red', 'video/ulpfec', 'video/flexfec-03'].includes(name(c)));
  return [...vp8, ...vp9, ...helpers];
}
