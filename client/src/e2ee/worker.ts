/**
 * The E2EE transform worker. Each sender's and receiver's encoded frames pass through
 * here: `encrypt` on the way out, `decrypt` on the way in. Works with both browser APIs:
 * `RTCRtpScriptTransform` (the `rtctransform` event) and Chromium's encoded insertable
 * streams (`createEncodedStreams()`, streams posted in a message).
 *
 * Messages from the page:
 *   { type: 'setKey', index, passphrase, room }   derive and install a key under `index`
 *   { type: 'useKey', index }                     encrypt with `index` from now on
 *   { type: 'streams', operation, codec, readable, writable }   (insertable streams)
 * Messages to the page:
 *   { type: 'decryptError', reason, keyIndex }    at most once a second per reason
 */
import { clearBytes, decryptFrame, deriveKey, encryptFrame, type FrameKey, type FrameKind, MAX_KEYS } from './frame-crypto.ts';

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

function reportError(reason: string, keyIndex: number | undefined): void {
  const now = Date.now();
  if (now - (lastErrorAt.get(reason) ?? 0) < 1000) return;
  lastErrorAt.set(reason, now);
  scope.postMessage({ type: 'decryptError', reason, keyIndex });
}

function frameKind(frame: EncodedFrame): FrameKind {
  if (frame.type === undefined) return 'audio';
  return frame.type === 'key' ? 'video-key' : 'video-delta';
}

function transformer(operation: Operation, codecHint: string): TransformStream<EncodedFrame, EncodedFrame> {
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
        reportError(e.reason ?? 'auth-failed', e.keyIndex);
      }
    },
  });
}

function pipe(readable: ReadableStream<EncodedFrame>, writable: WritableStream<EncodedFrame>, operation: Operation, codec: string): void {
  readable.pipeThrough(transformer(operation, codec)).pipeTo(writable).catch(() => {});
}

scope.addEventListener('message', (ev) => {
  const msg = ev.data as { type: string; [k: string]: unknown };
  if (msg.type === 'setKey') {
    const index = Number(msg.index);
    if (!Number.isInteger(index) || index < 0 || index >= MAX_KEYS) return;
    void deriveKey(String(msg.passphrase), String(msg.room)).then((key) => {
      keys.set(index, key);
      scope.postMessage({ type: 'keySet', index });
    });
  } else if (msg.type === 'useKey') {
    currentIndex = Number(msg.index);
  } else if (msg.type === 'streams') {
    pipe(msg.readable as ReadableStream<EncodedFrame>, msg.writable as WritableStream<EncodedFrame>, msg.operation as Operation, String(msg.codec ?? ''));
  }
});

// RTCRtpScriptTransform: the page passed { operation, codec } as options.
scope.addEventListener('rtctransform', (ev) => {
  const t = ev.transformer as { readable: ReadableStream<EncodedFrame>; writable: WritableStream<EncodedFrame>; options: { operation: Operation; codec?: string } };
  pipe(t.readable, t.writable, t.options.operation, t.options.codec ?? '');
});
