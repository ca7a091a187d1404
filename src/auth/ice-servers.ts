import { createHmac } from 'node:crypto';
import type { Config } from '../config.ts';

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

/**
 * ICE servers handed to one client. With a TURN secret the credential follows the
 * "TURN REST API" that coturn's `use-auth-secret` checks:
 * username = "<expiry unix seconds>:<identity>", credential = base64(HMAC-SHA1(secret, username)).
 */
export function iceServersFor(cfg: Config['ice'], identity: string, nowMs = Date.now()): IceServer[] {
  const out: IceServer[] = [];
  if (cfg.stunUrls.length > 0) out.push({ urls: cfg.stunUrls });
  if (cfg.turnUrls.length > 0) {
    if (cfg.turnSecret !== undefined) {
      const username = `${Math.floor(nowMs / 1000) + cfg.turnTtlSeconds}:${identity}`;
      const credential = createHmac('sha1', cfg.turnSecret).update(username).digest('base64');
      out.push({ urls: cfg.turnUrls, username, credential });
    } else if (cfg.turnStatic !== undefined) {
      out.push({ urls: cfg.turnUrls, ...cfg.turnStatic });
    } else {
      out.push({ urls: cfg.turnUrls });
    }
  }
  return out;
}
