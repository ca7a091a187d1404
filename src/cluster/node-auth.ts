import { createHmac, timingSafeEqual } from 'node:crypto';
import { AppError } from '../common/errors.ts';

/** The header a node-to-node hop carries (HTTP requests and the WebSocket upgrade alike). */
export const NODE_AUTH_HEADER = 'x-scv-node-auth';
/**
 * How far a credential's timestamp may be from the receiver's clock, either way: long
 * enough for a slow hop and a little clock skew, short enough that a captured header is
 * soon useless (it names one method and path anyway).
 */
export const NODE_AUTH_WINDOW_MS = 30_000;

/**
 * The node-to-node credential, derived from SCV_CLUSTER_SECRET:
 * `v1:<unix ms>:<base64url HMAC-SHA256>:<sending node id>` over
 * `v1\n<METHOD>\n<path with query>\n<node id>\n<unix ms>`. A request bearing a valid one
 * was relayed by a node of the cluster: the receiver hosts the room and never relays it again.
 */
export class NodeAuth {
  private readonly secret: string;
  private readonly node: string;

  constructor(secret: string, node: string) {
    this.secret = secret;
    this.node = node;
  }

  sign(method: string, path: string, now = Date.now()): string {
    return `v1:${now}:${mac(this.secret, method, path, this.node, now)}:${this.node}`;
  }

  /** The sending node's id; throws CLUSTER_AUTH_FAILED if the credential is missing, forged, for another request or outside the window. */
  verify(value: string | string[] | undefined, method: string, path: string, now = Date.now()): string {
    if (typeof value !== 'string') throw fail('missing or repeated');
    const [version, at, sent, ...rest] = value.split(':');
    const node = rest.join(':');
    const t = Number(at);
    if (version !== 'v1' || sent === undefined || node === '' || !/^\d{1,15}$/.test(at ?? '')) throw fail('malformed');
    if (Math.abs(now - t) > NODE_AUTH_WINDOW_MS) throw fail('outside its validity window');
    const expected = Buffer.from(mac(this.secret, method, path, node, t));
    const given = Buffer.from(sent);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw fail('signature does not match');
    return node;
  }
}

function mac(secret: string, method: string, path: string, node: string, at: number): string {
  return createHmac('sha256', secret).update(`v1\n${method.toUpperCase()}\n${path}\n${node}\n${at}`).digest('base64url');
}

function fail(why: string): AppError {
  return new AppError('CLUSTER_AUTH_FAILED', `node-to-node credential (${NODE_AUTH_HEADER}) ${why}`);
}
