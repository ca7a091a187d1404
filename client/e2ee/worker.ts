/**
 * The E2EE transform worker. Each sender's and receiver's encoded frames pass through
 * here: `encrypt` on the way out, `decrypt` on the way in. Works with both browser APIs:
 * `RTCRtpScriptTransform` (the `rtctransform` event) and Chromium's encoded insertable
 * streams (`createEncodedStreams()`, streams posted in a message).
 *
 * Messages from the page:
 *   { type: 'setKey', index, passphrase, room }   derive and install a key under `index`
 *   { type: 'setKey', index, key }                install raw key material (Uint8Array, 16/24/32 bytes)
 *   { type: 'useKey', index }                     encrypt with `index` from now on
 *   { type: 'streams', operation, codec, readable, writable, id? }   (insertable streams)
 * Messages to the page:
 *   { type: 'keySet', index }                     the key is installed
 *   { type: 'keyError', index, message }          it could not be (bad key material)
 *   { type: 'decryptError', reason, keyIndex, id }   at most once a second per reason and transform
 *
 * `id` is the page's name for one transform (the SDK passes the receiver's m-line), echoed
 * in `decryptError` so the page can tell whose media does not decrypt.
 */
import { clearBytes, decryptFrame, deriveKey, encryptFrame, type FrameKey, type FrameKind, importRawKey, MAX_KEYS } from './frame-crypto.ts';

interface EncodedFrame {
  data: ArrayBuffer;
  type?: 'key' | 'delta' | 'empty';
  getMetadata(): { mimeType?: string };
}

type Operation = 'encrypt' | 'decrypt';

/** The worker scope, typed by what we use so this file checks under the DOM lib too. */
const scope = globalThis as unknown as {
  postMessage(message: unknown): void;
  addEventListener(type: string, listener: (ev: { data?: unknown; transformer?: unknown }) => void): void;
};

const keys = new Map<number, FrameKey>();
let currentIndex = 0;
const lastErrorAt = new Map<string, number>();

function reportError(reason: string, keyIndex: number | undefined, id: string | undefined): void {
  const now = Date.now();
  const what = `${reason}/${id ?? ''}`;
  if (now - (lastErrorAt.get(what) ?? 0) < 1000) return;
  lastErrorAt.set(what, now);
  scope.postMessage({ type: 'decryptError', reason, keyIndex, id });
}

function frameKind(frame: EncodedFrame): FrameKind {
  if (frame.type === undefined) return 'audio';
  return frame.type === 'key' ? 'video-key' : 'video-delta';
}

function transformer(operation: Operation, codecHint: string, id: string | undefined): TransformStream<EncodedFrame, EncodedFrame> {
  return new TransformStream({
    async transform(frame, controller) {
      const codec = frame.getMetadata().mimeType ?? codecHint;
      const clear = clearBytes(codec, frameKind(frame));
      const data = new Uint8Array(frame.data);
      if (data.length === 0) return controller.enqueue(frame);
      if (operation === 'encrypt') {
        const key = keys.get(currentIndex);
        // No key yet: send nothing rather than plaintext.
        if (key === undefined) return;
        frame.data = (await encryptFrame(data, clear, key, currentIndex)).buffer;
        return controller.enqueue(frame);
      }
      try {
        frame.data = (await decryptFrame(data, clear, keys)).buffer;
        controller.enqueue(frame);
      } catch (err) {
        const e = err as { reason?: string; keyIndex?: number };
        reportError(e.reason ?? 'auth-failed', e.keyIndex, id);
      }
    },
  });
}

function pipe(readable: ReadableStream<EncodedFrame>, writable: WritableStream<EncodedFrame>, operation: Operation, codec: string, id: string | undefined): void {
  readable.pipeThrough(transformer(operation, codec, id)).pipeTo(writable).catch(() => {});
}

function optionalString(v: unknown): string | undefined {
  return v === undefined || v === null ? undefined : String(v);
}

scope.addEventListener('message', (ev) => {
  const msg = ev.data as { type: string; [k: string]: unknown };
  if (msg.type === 'setKey') {
    const index = Number(msg.index);
    if (!Number.isInteger(index) || index < 0 || index >= MAX_KEYS) {
      scope.postMessage({ type: 'keyError', index: msg.index, message: `key index must be 0…${MAX_KEYS - 1}` });
      return;
    }
    const pending = msg.key instanceof Uint8Array ? importRawKey(Uint8Array.from(msg.key)) : deriveKey(String(msg.passphrase), String(msg.room));
    pending.then(
      (key) => {
        keys.set(index, key);
        scope.postMessage({ type: 'keySet', index });
      },
      (err: unknown) => scope.postMessage({ type: 'keyError', index, message: err instanceof Error ? err.message : String(err) }),
    );
  } else if (msg.type === 'useKey') {
    currentIndex = Number(msg.index);
  } else if (msg.type === 'streams') {
    pipe(msg.readable as ReadableStream<EncodedFrame>, msg.writable as WritableStream<EncodedFrame>, msg.operation as Operation, String(msg.codec ?? ''), optionalString(msg.id));
  }
});

// RTCRtpScriptTransform: the page passed { operation, codec } as options.
scope.addEventListener('rtctransform', (ev) => {
  const t = ev.transformer as { readable: ReadableStream<EncodedFrame>; writable: WritableStream<EncodedFrame>; options: { operation: Operation; codec?: string; id?: string } };
  pipe(t.readable, t.writable, t.options.operation, t.options.codec ?? '', optionalString(t.options.id));
});
