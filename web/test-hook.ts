import type { ParticipantStats } from '../client/stats.ts';

/**
 * `window.__scv`: what the call page exposes for the browser tests (test/browser.test.ts)
 * and the join-time benchmark (bench/join-time.ts) to read with `page.evaluate`. Plain
 * data only, so Node-side code can import this type without the DOM library.
 */
export interface ScvTestHook {
  /** The room's connection state, or `idle` when not in a call. */
  state(): string;
  /** Every state the current room went through, oldest first. */
  states(): string[];
  /** Our participant sid (it changes when a rejoin rebuilds the room). */
  localSid(): string | undefined;
  participants(): HookParticipant[];
  /** The SDK's `room.getStats()`; empty when not in a call. */
  stats(): Promise<ParticipantStats[]>;
  /** `performance.now()` of the last Join click and of the first remote video frame after it. */
  timings(): { joinClicked: number | undefined; firstRemoteFrame: number | undefined };
  /** The room's mode, and in an E2EE room the encoded-frame API in use and the key slot we send with. */
  e2ee(): { enabled: boolean; api: string | undefined; keyIndex: number | undefined };
  /** Every `e2eeError` event of the current room, oldest first. */
  e2eeErrors(): HookE2eeError[];
  /** `room.recording`. */
  recording(): boolean;
}

export interface HookE2eeError {
  reason: string;
  keyIndex: number | undefined;
  /** Whose media did not decrypt (undefined if the SDK could not tell). */
  identity: string | undefined;
  kind: string | undefined;
  at: number;
}

export interface HookParticipant {
  sid: string;
  identity: string;
  name: string;
  tracks: { sid: string; kind: 'audio' | 'video'; muted: boolean; subscribed: boolean }[];
}
