import type { WebSocket } from 'ws';
import { AppError, toAppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TokenBucket } from '../common/token-bucket.ts';
import type { Config } from '../config.ts';
import { keepAlive } from './keepalive.ts';
import type { ServerMessage } from './messages.ts';
import { errorMessage, parseClientMessage, type RequestId } from './parse-message.ts';

/** WebSocket close code for a connection we end for breaking a limit (join timeout, message rate). */
export const POLICY_VIOLATION_CLOSE = 1008;

/**
 * How long a server shutdown waits for a client to answer its close frame before it drops
 * the socket (ws would wait 30 s, and the HTTP server's close waits for every socket).
 */
const SHUTDOWN_CLOSE_MS = 2000;

/** A refused frame up to this size is read for its request id; a larger one is answered without. */
const REFUSED_FRAME_READ_BYTES = 1024;

/**
 * What every kind of signaling connection does with its client's socket: keepalive pings,
 * socket errors logged, server messages and errors sent in the one format, a clock for
 * joining and a message rate limit. The session (media in this process) and the edge
 * session (media in a worker) build on it, so both enforce the same limits.
 */
export abstract class ClientConnection {
  protected readonly ws: WebSocket;
  /** Gains room and participant fields once they are known. */
  protected log: Logger;
  private readonly limits: Config['limits'];
  private readonly bucket: TokenBucket;
  /**
   * Refusals get the same budget as messages: a client that keeps sending at more than
   * twice its rate runs out of it and is cut off, so a flood costs at most that much.
   */
  private readonly refusals: TokenBucket;
  private joinTimer: NodeJS.Timeout | undefined;

  constructor(ws: WebSocket, log: Logger, limits: Config['limits']) {
    this.ws = ws;
    this.log = log;
    this.limits = limits;
    this.bucket = new TokenBucket(limits.signalingRate);
    this.refusals = new TokenBucket(limits.signalingRate);
    ws.on('error', (err) => this.log.debug({ err: err.message }, 'websocket error'));
    ws.on('message', (data, isBinary) => {
      if (this.admit(data as Buffer, isBinary)) this.onClientFrame(data as Buffer, isBinary);
    });
    keepAlive(ws, () => this.log);
    this.joinTimer = setTimeout(() => this.onJoinTimeout(), limits.joinTimeoutMs);
    this.joinTimer.unref();
    ws.once('close', () => clearTimeout(this.joinTimer));
  }

  /** One frame from the client that the rate limit let through. */
  protected abstract onClientFrame(data: Buffer, isBinary: boolean): void;

  /** Server shutdown: the close frame, and the socket dropped if the client does not answer within SHUTDOWN_CLOSE_MS. */
  close(code = 1001, reason = 'server shutdown'): void {
    this.ws.close(code, reason);
    const timer = setTimeout(() => this.ws.terminate(), SHUTDOWN_CLOSE_MS);
    timer.unref();
    this.ws.once('close', () => clearTimeout(timer));
  }

  /** The client is in a room: the join clock stops. */
  protected joinedRoom(): void {
    clearTimeout(this.joinTimer);
    this.joinTimer = undefined;
  }

  /** Sends one server message, if the socket is still open. */
  protected send(msg: ServerMessage): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Sends `err` as an `error` message (its code, or INTERNAL, which is logged: a bug). */
  protected sendError(id: RequestId, err: unknown): void {
    const e = toAppError(err);
    if (e.code === 'INTERNAL') this.log.error({ err }, 'signaling request failed');
    this.send(errorMessage(id, e));
  }

  private onJoinTimeout(): void {
    this.joinTimer = undefined;
    this.log.info({ timeoutMs: this.limits.joinTimeoutMs }, 'closing a signaling connection that never joined');
    this.sendError(undefined, new AppError('JOIN_TIMEOUT', `no successful "join" within ${this.limits.joinTimeoutMs / 1000} s`));
    this.ws.close(POLICY_VIOLATION_CLOSE, 'join timeout');
  }

  /** False once the connection is closing: work that was waiting (a token check) must stop. */
  protected get open(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  /**
   * The rate limit: an excess message gets RATE_LIMITED (with its request id when the frame
   * is small enough to read for almost nothing, so the client's request fails instead of
   * hanging; a refused frame is never parsed in full); once the refusals outrun their own
   * budget the client is not slowing down, and the connection is closed.
   */
  private admit(data: Buffer, isBinary: boolean): boolean {
    if (this.bucket.take()) return true;
    if (!this.open) return false;
    const { ratePerSecond, burst } = this.limits.signalingRate;
    if (!this.refusals.take()) {
      this.log.warn({ ratePerSecond, burst }, 'signaling message flood, closing the connection');
      this.sendError(undefined, new AppError('RATE_LIMITED', `over ${ratePerSecond} messages per second for too long; closing`));
      this.ws.close(POLICY_VIOLATION_CLOSE, 'rate limited');
      return false;
    }
    const parsed = data.length <= REFUSED_FRAME_READ_BYTES ? parseClientMessage(data, isBinary, this.limits.maxMessageBytes) : undefined;
    const id = parsed === undefined ? undefined : parsed.ok ? parsed.msg.id : parsed.id;
    this.sendError(id, new AppError('RATE_LIMITED', `over ${ratePerSecond} messages per second; message dropped`));
    return false;
  }
}
