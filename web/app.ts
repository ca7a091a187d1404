/**
 * The call page: a join form, then a CallView of the joined room. The token comes from
 * `?token=` or, while the server runs with its development key, from GET /dev/token.
 * URL parameters: `?room=&name=` fill the form, `&autojoin=1` joins at once,
 * `&grants=publish,subscribe,record` asks /dev/token for those grants (`record` shows the
 * Record button), `&e2eeApi=insertable-streams` forces that encoded-frame API (testing).
 *
 * A passphrase in the form makes the call end-to-end encrypted (docs/e2ee.md): the dev
 * token then carries `e2ee: true`, and the SDK derives the key from it in the browser. The
 * passphrase is never put in a URL or sent anywhere.
 */
import { type ConnectionState, type E2eeApi, type E2eeError, Room, RoomError } from '../client/index.ts';
import { CallView } from './call-view.ts';
import type { HookE2eeError, HookParticipant, ScvTestHook } from './test-hook.ts';

declare global {
  interface Window {
    __scv: ScvTestHook;
  }
}

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`index.html lacks #${id}`);
  return el as T;
}

const joinView = byId('join-view');
const callView = byId('call-view');
const form = byId<HTMLFormElement>('join-form');
const roomInput = byId<HTMLInputElement>('room-input');
const nameInput = byId<HTMLInputElement>('name-input');
const passphraseInput = byId<HTMLInputElement>('passphrase-input');
const joinButton = byId<HTMLButtonElement>('join-button');
const messageEl = byId('message');

const params = new URLSearchParams(location.search);
roomInput.value = params.get('room') ?? '';
nameInput.value = params.get('name') ?? '';

let room: Room | undefined;
let view: CallView | undefined;
let states: ConnectionState[] = [];
let joinClicked: number | undefined;
let firstRemoteFrame: number | undefined;
let e2eeErrors: HookE2eeError[] = [];
/** What the page asked /dev/token for; `record` shows the Record button. */
const grants = params.get('grants') ?? undefined;
const e2eeApiParam = params.get('e2eeApi');
const forcedApi: E2eeApi | undefined = e2eeApiParam === 'insertable-streams' || e2eeApiParam === 'script-transform' ? e2eeApiParam : undefined;

function showMessage(text: string | undefined, level: 'error' | 'warn' | 'info' = 'error'): void {
  delete messageEl.dataset.kind;
  messageEl.hidden = text === undefined;
  messageEl.textContent = text ?? '';
  messageEl.className = level;
}

/** The access token: from the URL, or minted by the server's development endpoint. */
async function fetchToken(roomName: string, name: string, e2ee: boolean): Promise<string> {
  const fromUrl = params.get('token');
  if (fromUrl !== null && fromUrl !== '') return fromUrl;
  // A fresh identity per tab: the same identity joining twice would replace the first tab.
  const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 40) || 'guest'}-${crypto.randomUUID().slice(0, 8)}`;
  const query = new URLSearchParams({ room: roomName, identity, name });
  // With a passphrase the room must be end-to-end encrypted (created so, or refused if it is not).
  if (e2ee) query.set('e2ee', '1');
  if (grants !== undefined) query.set('grants', grants);
  let res: Response;
  try {
    res = await fetch(`/dev/token?${query}`);
  } catch {
    throw new RoomError('CONNECT_FAILED', 'Cannot reach the server. Is it running?');
  }
  if (res.status === 404) {
    throw new RoomError(
      'NO_TOKEN',
      'This server does not hand out development tokens (it runs with SCV_API_KEY set). Ask for an access token and open this page with ?token=<token>.',
    );
  }
  const body = (await res.json().catch(() => ({}))) as { token?: string; error?: { message?: string } };
  if (!res.ok || body.token === undefined) throw new RoomError('NO_TOKEN', `Could not get a token: ${body.error?.message ?? `HTTP ${res.status}`}`);
  return body.token;
}

function explain(err: RoomError): string {
  switch (err.code) {
    case 'UNAUTHORIZED':
    case 'TOKEN_EXPIRED':
    case 'FORBIDDEN':
      return `The server refused the access token (${err.code}: ${err.message}).`;
    case 'CONNECT_FAILED':
      return `Cannot reach the server: ${err.message}`;
    case 'RECONNECT_FAILED':
      return `Lost the connection to the server: ${err.message}`;
    case 'LEFT':
      return `You are no longer in the call: ${err.message}.`;
    case 'NO_TOKEN':
      return err.message;
    case 'E2EE_MODE_MISMATCH':
      return passphraseInput.value === ''
        ? `This call's encryption mode changed: ${err.message}.`
        : 'This room is not end-to-end encrypted, so it cannot be joined with a passphrase. Leave the passphrase empty to join it, or pick another room name for an encrypted call.';
    case 'E2EE_RECORDING_FORBIDDEN':
      return 'This call is end-to-end encrypted: the server cannot see its media, so it cannot record it (E2EE_RECORDING_FORBIDDEN).';
    case 'E2EE_UNSUPPORTED':
      return `This call is end-to-end encrypted, and this browser cannot encrypt media (${err.message}). Try a current Chrome, Edge, Firefox or Safari.`;
    case 'E2EE_KEY_INVALID':
    case 'E2EE_KEY_REQUIRED':
      return `End-to-end encryption: ${err.message}`;
    default:
      return `Something went wrong (${err.code}): ${err.message}`;
  }
}

function describeDecryptProblem(err: E2eeError): string {
  const whose = err.participant === undefined ? 'Some media' : `${err.participant.name}'s ${err.track?.kind ?? 'media'}`;
  if (err.reason === 'auth-failed') return `${whose} cannot be decrypted: their passphrase is probably different from yours.`;
  if (err.reason === 'unknown-key') return `${whose} cannot be decrypted: it uses a key this page does not have (${err.message}).`;
  return `${whose} cannot be decrypted (${err.message}).`;
}

async function join(roomName: string, name: string): Promise<void> {
  joinButton.disabled = true;
  showMessage(undefined);
  joinClicked = performance.now();
  firstRemoteFrame = undefined;
  e2eeErrors = [];
  states = ['connecting'];
  const passphrase = passphraseInput.value;
  let joined: Room;
  try {
    const token = await fetchToken(roomName, name, passphrase !== '');
    joined = await Room.connect(location.origin, token, { name, e2ee: passphrase === '' ? undefined : { passphrase, api: forcedApi } });
  } catch (err) {
    joinButton.disabled = false;
    states.push('disconnected');
    showMessage(explain(err instanceof RoomError ? err : new RoomError('INTERNAL', String(err))));
    return;
  }
  if (joined.e2ee && passphrase === '') {
    // Without the key we could neither send nor see anything: back to the form.
    await joined.leave();
    joinButton.disabled = false;
    states.push('disconnected');
    showMessage('This call is end-to-end encrypted. Enter its passphrase to join.', 'warn');
    passphraseInput.focus();
    return;
  }
  room = joined;
  states.push(joined.state);
  byId('room-title').textContent = roomName;
  joinView.hidden = true;
  callView.hidden = false;
  view = new CallView(
    joined,
    {
      grid: byId('grid'),
      list: byId('participant-list'),
      badge: byId('state-badge'),
      micButton: byId('mic-button'),
      cameraButton: byId('camera-button'),
      e2eeBadge: byId('e2ee-badge'),
      recordingBadge: byId('recording-badge'),
      recordButton: byId('record-button'),
    },
    {
      onFirstRemoteFrame: () => {
        firstRemoteFrame ??= performance.now();
      },
      onAutoplayBlocked: () => showMessage('Click anywhere on the page to turn on the sound.', 'info'),
      onDecryptProblem: (err) => {
        if (err === undefined) {
          if (messageEl.dataset.kind === 'decrypt') showMessage(undefined);
          return;
        }
        e2eeErrors.push({ reason: err.reason, keyIndex: err.keyIndex, identity: err.participant?.identity, kind: err.track?.kind, at: Date.now() });
        showMessage(describeDecryptProblem(err), 'warn');
        messageEl.dataset.kind = 'decrypt';
      },
      onRecordError: (err) => showMessage(explain(err)),
    },
    { canRecord: grants?.split(',').includes('record') === true },
  );
  joined.on('connectionStateChanged', (state) => {
    states.push(state);
    if (state === 'reconnecting') showMessage('Connection lost, reconnecting…', 'warn');
    else if (state === 'connected') showMessage(undefined);
    else if (state === 'disconnected') endCall(joined.disconnectReason);
  });
  joined.on('error', (err) => console.warn('room error', err.code, err.message));
  try {
    view.showLocalTracks(await joined.publish({ audio: true, video: { width: 640, height: 480 } }));
  } catch (err) {
    const e = err instanceof RoomError ? err : new RoomError('INTERNAL', String(err));
    if (e.code === 'MEDIA_DENIED') {
      showMessage('Camera and microphone access was refused: you are in the call, but the others cannot see or hear you. Allow access in the site settings and join again.');
    } else if (e.code === 'MEDIA_UNAVAILABLE') {
      showMessage(`No camera or microphone could be started (${e.message}): you are in the call as a viewer.`);
    } else if (joined.state !== 'disconnected') {
      showMessage(explain(e));
    }
  }
}

function endCall(reason: RoomError | undefined): void {
  view?.close();
  view = undefined;
  room = undefined;
  callView.hidden = true;
  joinView.hidden = false;
  joinButton.disabled = false;
  showMessage(reason === undefined ? 'You left the call.' : explain(reason), reason === undefined ? 'info' : 'error');
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  void join(roomInput.value.trim(), nameInput.value.trim());
});
byId('leave-button').addEventListener('click', () => {
  const r = room;
  if (r !== undefined) void r.leave().then(() => endCall(undefined));
});
document.addEventListener('click', () => view?.resumeAudio());

window.__scv = {
  state: () => room?.state ?? 'idle',
  states: () => [...states],
  localSid: () => room?.localParticipant.sid,
  participants: (): HookParticipant[] =>
    [...(room?.participants.values() ?? [])].map((p) => ({
      sid: p.sid,
      identity: p.identity,
      name: p.name,
      tracks: [...p.tracks.values()].map((t) => ({ sid: t.sid, kind: t.kind, muted: t.muted, subscribed: t.mediaTrack !== undefined })),
    })),
  stats: async () => (room === undefined ? [] : room.getStats()),
  timings: () => ({ joinClicked, firstRemoteFrame }),
  e2ee: () => ({ enabled: room?.e2ee ?? false, api: room?.e2eeApi, keyIndex: room?.e2eeKeyIndex }),
  e2eeErrors: () => [...e2eeErrors],
  recording: () => room?.recording ?? false,
};

if (params.get('autojoin') === '1' && roomInput.value.trim() !== '' && nameInput.value.trim() !== '') {
  void join(roomInput.value.trim(), nameInput.value.trim());
}
