/**
 * One video tile of the grid: a participant's video (or a placeholder), their audio, their
 * name, muted badges and a line of stats. Tests find tiles by `data-identity`.
 */
export class Tile {
  readonly el: HTMLElement;
  private readonly video: HTMLVideoElement;
  private readonly audio: HTMLAudioElement;
  private readonly placeholder: HTMLElement;
  private readonly micBadge: HTMLElement;
  private readonly camBadge: HTMLElement;
  private readonly statsEl: HTMLElement;
  private readonly decryptBadge: HTMLElement;

  constructor(opts: { identity: string; name: string; local: boolean }) {
    this.el = document.createElement('div');
    this.el.className = opts.local ? 'tile local' : 'tile remote';
    this.el.dataset.identity = opts.identity;
    this.video = document.createElement('video');
    this.video.autoplay = true;
    this.video.playsInline = true;
    // Sound plays through the audio element; the video element stays muted so it may autoplay.
    this.video.muted = true;
    this.audio = document.createElement('audio');
    this.audio.autoplay = true;
    this.placeholder = element('div', 'placeholder', 'no video');
    const label = element('div', 'label');
    const name = element('span', 'name', opts.local ? `${opts.name} (you)` : opts.name);
    this.micBadge = element('span', 'muted-badge mic', 'mic off');
    this.camBadge = element('span', 'muted-badge camera', 'camera off');
    this.micBadge.hidden = this.camBadge.hidden = true;
    label.append(name, this.micBadge, this.camBadge);
    this.statsEl = element('div', 'stats');
    this.statsEl.hidden = true;
    this.decryptBadge = element('div', 'decrypt-badge', 'cannot decrypt: different passphrase?');
    this.decryptBadge.hidden = true;
    this.el.append(this.video, this.placeholder, this.audio, label, this.statsEl, this.decryptBadge);
  }

  /** Shows `track` (or the placeholder); `onFirstFrame` runs when its first frame is painted. */
  setVideo(track: MediaStreamTrack | undefined, onFirstFrame?: () => void): void {
    this.video.srcObject = track === undefined ? null : new MediaStream([track]);
    this.placeholder.hidden = track !== undefined;
    if (track !== undefined && onFirstFrame !== undefined) this.video.requestVideoFrameCallback(() => onFirstFrame());
  }

  /** Plays `track`; resolves false when the browser's autoplay policy blocked the sound. */
  async setAudio(track: MediaStreamTrack | undefined): Promise<boolean> {
    this.audio.srcObject = track === undefined ? null : new MediaStream([track]);
    return track === undefined ? true : this.playAudio();
  }

  async playAudio(): Promise<boolean> {
    if (this.audio.srcObject === null) return true;
    try {
      await this.audio.play();
      return true;
    } catch {
      return false;
    }
  }

  setMuted(kind: 'audio' | 'video', muted: boolean): void {
    (kind === 'audio' ? this.micBadge : this.camBadge).hidden = !muted;
    this.el.dataset[kind === 'audio' ? 'micMuted' : 'cameraMuted'] = String(muted);
  }

  /** E2EE: this participant's media does not decrypt with our key (or does again). */
  setDecryptFailing(failing: boolean): void {
    this.decryptBadge.hidden = !failing;
    this.el.dataset.decryptFailing = String(failing);
  }

  setStats(text: string | undefined): void {
    this.statsEl.hidden = text === undefined;
    this.statsEl.textContent = text ?? '';
  }

  remove(): void {
    this.video.srcObject = null;
    this.audio.srcObject = null;
    this.el.remove();
  }
}

function element(tag: string, className: string, text?: string): HTMLElement {
  const el = document.createElement(tag);
  el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}
