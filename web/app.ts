/**
 * The call page: a join form, then a CallView of the joined room. The token comes from
 * `?token=` or, while the server runs with its development key, from GET /dev/token.
 * URL parameters: `?room=&name=` fill the form, `&autojoin=1` joins at once.
 */
import { type ConnectionState, Room, RoomError } from '../client/index.ts';
import { CallView } from './call-view.ts';
import type { HookParticipant, ScvTestHook } from './test-hook.ts';

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

function showMessage(text: string | undefined, level: 'error' | 'warn' | 'info' = 'error'): void {
  messageEl.hidden = text === undefined;
  messageEl.textContent = text ?? '';
  messageEl.className = level;
}

/** The access token: from the URL, or minted by the server's development endpoint. */
async function fetchToken(roomName: string, name: string): Promise<string> {
  const fromUrl = params.get('token');
  if (fromUrl !== null && fromUrl !== '') return fromUrl;
  // A fresh identity per tab: the same identity joining twice would replace the first tab.
  const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 40) || 'guest'}-${crypto.randomUUID().slice(0, 8)}`;
  const query = new URLSearchParams({ room: roomName, identity, name });
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
    default:
      return `Something went wrong (${err.code}): ${err.message}`;
  }
}

async function join(roomName: string, name: string): Promise<void> {
  joinButton.disabled = true;
  showMessage(undefined);
  joinClicked = performance.now();
  firstRemoteFrame = undefined;
  states = ['connecting'];
  try {
    const token = await fetchToken(roomName, name);
    room = await Room.connect(location.origin, token, { name });
  } catch (err) {
    joinButton.disabled = false;
    states.push('disconnected');
    showMessage(explain(err instanceof RoomError ? err : new RoomError('INTERNAL', String(err))));
    return;
  }
  const joined = room;
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
    },
    {
      onFirstRemoteFrame: () => {
        firstRemoteFrame ??= performance.now();
      },
      onAutoplayBlocked: () => showMessage('Click anywhere on the page to turn on the sound.', 'info'),
    },
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
};

if (params.get('autojoin') === '1' && roomInput.value.trim() !== '' && nameInput.value.trim() !== '') {
  void join(roomInput.value.trim(), nameInput.value.trim());
}
