import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { DEFAULT_TOKEN_LIMITS, type TokenLimits } from './common/limits.ts';
import type { RateLimit } from './common/token-bucket.ts';

/**
 * All settings, parsed once at start-up from SCV_* environment variables and `--flags`.
 * A flag `--http-port 8080` sets the same key as `SCV_HTTP_PORT=8080`; flags win.
 * Each schema key is the upper-snake form of the variable name without the SCV_ prefix.
 */
export const CODEC_NAMES = ['opus', 'vp8', 'vp9', 'h264'] as const;
export type CodecName = (typeof CODEC_NAMES)[number];

const csv = (s: string) =>
  s
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v.length > 0);

const port = z.coerce.number().int().min(0).max(65535);
const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const RawConfig = z
  .object({
    HTTP_HOST: z.string().min(1).default('127.0.0.1'),
    HTTP_PORT: port.default(7880),
    /** Address written into our ICE candidates instead of the bound one (NAT 1:1, containers). */
    ANNOUNCED_IP: z.ipv4().or(z.ipv6()).optional(),
    /** Extra host addresses to gather ICE candidates on; loopback is not gathered otherwise. */
    RTC_EXTRA_HOSTS: z.string().default('127.0.0.1').transform(csv),
    /** Restrict candidate gathering to these interface addresses (comma list); empty = all. */
    RTC_INTERFACES: z.string().default('').transform(csv),
    RTC_PORT_MIN: port.optional(),
    RTC_PORT_MAX: port.optional(),
    RTC_IPV6: bool.default(false),
    /**
     * Seconds without an answer to our ICE consent checks (RFC 7675) before a connection
     * fails; werift checks every 4-6 s, so less than 8 would fail healthy connections.
     */
    RTC_CONSENT_TIMEOUT: z.coerce.number().min(8).max(300).default(30),
    /** Seconds a subscriber offer may wait for its answer before it is withdrawn and sent afresh. */
    NEGOTIATION_TIMEOUT: z.coerce.number().min(1).max(300).default(10),
    STUN_URLS: z.string().default('').transform(csv),
    TURN_URLS: z.string().default('').transform(csv),
    TURN_USERNAME: z.string().optional(),
    TURN_CREDENTIAL: z.string().optional(),
    /** coturn `use-auth-secret`: credentials are minted per client from this secret. */
    TURN_SECRET: z.string().min(8).optional(),
    TURN_TTL_SECONDS: z.coerce.number().int().positive().default(86400),
    CODECS: z
      .string()
      .default('opus,vp8,vp9,h264')
      .transform(csv)
      .pipe(z.array(z.enum(CODEC_NAMES)).min(1))
      .refine((c) => c.includes('opus'), 'opus must be enabled (it is the only audio codec)')
      .refine((c) => c.some((x) => x !== 'opus'), 'at least one video codec must be enabled'),
    MAX_ROOMS: z.coerce.number().int().positive().default(1000),
    MAX_PARTICIPANTS: z.coerce.number().int().positive().default(50),
    /** Seconds an empty room lives before it closes. */
    EMPTY_ROOM_TIMEOUT: z.coerce.number().min(0).default(30),
    /** Seconds a participant whose WebSocket dropped may take to come back before removal. */
    RECONNECT_GRACE: z.coerce.number().min(0).default(15),
    /**
     * Event-loop utilization (0-1] from which a media process sheds subscriber video
     * (src/sfu/overload-guard.ts); `off` never sheds.
     */
    OVERLOAD_UTILIZATION: z
      .union([z.literal('off'), z.coerce.number().gt(0).max(1)])
      .default(0.9)
      .transform((v) => (v === 'off' ? undefined : v)),
    /** Largest signaling message accepted, in bytes. */
    MAX_MESSAGE_BYTES: z.coerce.number().int().positive().default(256 * 1024),
    /** Seconds a signaling WebSocket may stay open without joining a room. */
    JOIN_TIMEOUT: z.coerce.number().positive().default(10),
    /** Signaling messages per second one connection may send, sustained… */
    SIGNALING_RATE: z.coerce.number().positive().default(50),
    /** …and at once; refusals get the same budget, and running out of it closes the connection. */
    SIGNALING_BURST: z.coerce.number().int().positive().default(100),
    /** Longest lifetime (exp - iat, and exp - now) an access token may have, in seconds. */
    MAX_TOKEN_LIFETIME: z.coerce.number().int().positive().default(DEFAULT_TOKEN_LIMITS.maxLifetimeSeconds),
    /** Seconds a token's iat and nbf may lie in the future (the issuer's clock may be ahead). */
    TOKEN_CLOCK_SKEW: z.coerce.number().int().min(0).max(300).default(DEFAULT_TOKEN_LIMITS.clockSkewSeconds),
    /** WHEP players per room; they do not count against SCV_MAX_PARTICIPANTS. */
    MAX_WHEP_PLAYERS: z.coerce.number().int().positive().default(100),
    /** WHEP players one token identity may have open in a room. */
    MAX_WHEP_PLAYERS_PER_IDENTITY: z.coerce.number().int().positive().default(10),
    /**
     * HTTP requests (WebSocket upgrades included) one client IP may make per
     * SCV_HTTP_RATE_WINDOW, at the edge or a single process; `off` = no limit.
     */
    HTTP_RATE_LIMIT: z
      .union([z.literal('off'), z.coerce.number().int().positive()])
      .default(2000)
      .transform((v) => (v === 'off' ? undefined : v)),
    /** Seconds of one HTTP rate-limit window. */
    HTTP_RATE_WINDOW: z.coerce.number().positive().default(10),
    /** Where recordings are written, one folder per recording. */
    RECORDINGS_DIR: z.string().min(1).default('recordings'),
    /**
     * Media worker processes: `auto` = one per core; 0 = media in this process (one
     * process, no edge relay; not allowed with SCV_REDIS_URL).
     */
    MEDIA_WORKERS: z
      .union([z.literal('auto'), z.coerce.number().int().min(0).max(256)])
      .default('auto')
      .transform((v) => (v === 'auto' ? availableParallelism() : v)),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    API_KEY: z.string().min(1).optional(),
    API_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
    /** Redis of the cluster (issue 10, docs/cluster.md); unset = one node, in memory, no Redis. */
    REDIS_URL: z.url({ protocol: /^rediss?$/ }).optional(),
    /** This node's id in the cluster; default: hostname:port, fixed for the process. */
    NODE_ID: z.string().regex(/^[A-Za-z0-9._:-]{1,100}$/, 'letters, digits and . _ : - (at most 100)').optional(),
    /** This node's HTTP base URL as other nodes and clients reach it; default: the listen address. */
    PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional(),
    /** Shared by the nodes of a cluster: authenticates node-to-node requests. */
    CLUSTER_SECRET: z.string().min(16, 'must be at least 16 characters').optional(),
    /**
     * Seconds a draining cluster node (SIGTERM, or POST /video/nodes/:node/drain) may take
     * to move its rooms away before a stop closes what is left as a shutdown.
     */
    DRAIN_TIMEOUT: z.coerce.number().min(1).max(3600).default(30),
  })
  .refine((c) => c.REDIS_URL === undefined || c.CLUSTER_SECRET !== undefined, {
    message: 'SCV_CLUSTER_SECRET is required when SCV_REDIS_URL is set (it authenticates node-to-node requests)',
    path: ['CLUSTER_SECRET'],
  })
  // One relay, the edge's, serves both worker and node hops; a one-process node would need a second one.
  .refine((c) => c.REDIS_URL === undefined || c.MEDIA_WORKERS > 0, {
    message:
      'a cluster node runs its media in worker processes (it relays for other nodes through its edge); set SCV_MEDIA_WORKERS to 1 or more, or leave it unset for one per core',
    path: ['REDIS_URL'],
  })
  .refine((c) => (c.API_KEY === undefined) === (c.API_SECRET === undefined), {
    message: 'SCV_API_KEY and SCV_API_SECRET must be set together',
    path: ['API_SECRET'],
  })
  .refine((c) => (c.RTC_PORT_MIN === undefined) === (c.RTC_PORT_MAX === undefined), {
    message: 'SCV_RTC_PORT_MIN and SCV_RTC_PORT_MAX must be set together',
    path: ['RTC_PORT_MAX'],
  })
  .refine((c) => c.RTC_PORT_MIN === undefined || c.RTC_PORT_MIN < (c.RTC_PORT_MAX ?? 0), {
    message: 'SCV_RTC_PORT_MIN must be below SCV_RTC_PORT_MAX',
    path: ['RTC_PORT_MIN'],
  })
  .refine((c) => (c.TURN_USERNAME === undefined) === (c.TURN_CREDENTIAL === undefined), {
    message: 'SCV_TURN_USERNAME and SCV_TURN_CREDENTIAL must be set together',
    path: ['TURN_CREDENTIAL'],
  });

export interface Config {
  http: { host: string; port: number };
  rtc: {
    announcedIp: string | undefined;
    extraHosts: string[];
    interfaces: string[];
    portRange: [number, number] | undefined;
    ipv6: boolean;
    codecs: CodecName[];
    /** RTC_CONSENT_TIMEOUT, in seconds (werift's unit). */
    consentTimeoutSeconds: number;
    /**
     * Media sections one SDP may have: 2 × MAX_PARTICIPANTS + 2, enough for a subscriber
     * receiving audio and video from everyone else plus a data channel (subscriber m-lines
     * are reused, so they never outgrow the room), and a cap on what a hostile SDP costs.
     */
    maxMediaSections: number;
    /** NEGOTIATION_TIMEOUT, in ms. */
    negotiationTimeoutMs: number;
  };
  ice: {
    stunUrls: string[];
    turnUrls: string[];
    turnStatic: { username: string; credential: string } | undefined;
    turnSecret: string | undefined;
    turnTtlSeconds: number;
  };
  limits: {
    maxRooms: number;
    maxParticipants: number;
    emptyRoomTimeoutMs: number;
    reconnectGraceMs: number;
    maxMessageBytes: number;
    /** A signaling connection that has not joined by then is closed (JOIN_TIMEOUT). */
    joinTimeoutMs: number;
    /** Per signaling connection, at the edge and in the media process alike. */
    signalingRate: RateLimit;
    maxWhepPlayers: number;
    maxWhepPlayersPerIdentity: number;
    /** Per client IP; undefined = no limit (media workers: the edge limits). */
    httpRate: { max: number; windowMs: number } | undefined;
    /** Event-loop utilization from which video forwarding is shed; undefined = never. */
    overloadUtilization: number | undefined;
  };
  /** Media worker processes behind the signaling edge; 0 = media runs in the edge's process. */
  mediaWorkers: number;
  logLevel: string;
  recordingsDir: string;
  auth: { apiKey: string; apiSecret: string; development: boolean; tokenLimits: TokenLimits };
  /** Undefined: one node, nothing in Redis. */
  cluster: ClusterConfig | undefined;
  /** SCV_DRAIN_TIMEOUT: how long a draining cluster node may take to empty before it stops anyway. */
  drainTimeoutMs: number;
}

export interface ClusterConfig {
  redisUrl: string;
  /** Undefined: hostname:port once the port is bound. */
  nodeId: string | undefined;
  /** Undefined: the listen address. */
  publicUrl: string | undefined;
  secret: string;
  /** Every key of the cluster starts with it, so one Redis can hold other data too. */
  keyPrefix: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** `--http-port 1 --log-level=debug` → { HTTP_PORT: '1', LOG_LEVEL: 'debug' } */
function flagsToKeys(argv: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const value = eq === -1 ? argv[i + 1] : arg.slice(eq + 1);
    if (value === undefined || (eq === -1 && value.startsWith('--'))) throw new ConfigError(`flag --${name} needs a value`);
    if (eq === -1) i++;
    out[name.toUpperCase().replaceAll('-', '_')] = value;
  }
  return out;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, argv: readonly string[] = []): Config {
  const raw: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('SCV_') && v !== undefined && v !== '') raw[k.slice(4)] = v;
  }
  Object.assign(raw, flagsToKeys(argv));
  const known = new Set(Object.keys(RawConfig.shape));
  for (const k of Object.keys(raw)) {
    if (!known.has(k)) throw new ConfigError(`unknown setting SCV_${k} (--${k.toLowerCase().replaceAll('_', '-')})`);
  }
  const parsed = RawConfig.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `SCV_${String(i.path[0] ?? '?')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const c = parsed.data;
  const development = c.API_KEY === undefined;
  return {
    http: { host: c.HTTP_HOST, port: c.HTTP_PORT },
    rtc: {
      announcedIp: c.ANNOUNCED_IP,
      extraHosts: c.RTC_EXTRA_HOSTS,
      interfaces: c.RTC_INTERFACES,
      portRange: c.RTC_PORT_MIN === undefined ? undefined : [c.RTC_PORT_MIN, c.RTC_PORT_MAX!],
      ipv6: c.RTC_IPV6,
      codecs: c.CODECS,
      consentTimeoutSeconds: c.RTC_CONSENT_TIMEOUT,
      maxMediaSections: 2 * c.MAX_PARTICIPANTS + 2,
      negotiationTimeoutMs: c.NEGOTIATION_TIMEOUT * 1000,
    },
    ice: {
      stunUrls: c.STUN_URLS,
      turnUrls: c.TURN_URLS,
      turnStatic: c.TURN_USERNAME === undefined ? undefined : { username: c.TURN_USERNAME, credential: c.TURN_CREDENTIAL! },
      turnSecret: c.TURN_SECRET,
      turnTtlSeconds: c.TURN_TTL_SECONDS,
    },
    limits: {
      maxRooms: c.MAX_ROOMS,
      maxParticipants: c.MAX_PARTICIPANTS,
      emptyRoomTimeoutMs: c.EMPTY_ROOM_TIMEOUT * 1000,
      reconnectGraceMs: c.RECONNECT_GRACE * 1000,
      maxMessageBytes: c.MAX_MESSAGE_BYTES,
      joinTimeoutMs: c.JOIN_TIMEOUT * 1000,
      signalingRate: { ratePerSecond: c.SIGNALING_RATE, burst: c.SIGNALING_BURST },
      maxWhepPlayers: c.MAX_WHEP_PLAYERS,
      maxWhepPlayersPerIdentity: c.MAX_WHEP_PLAYERS_PER_IDENTITY,
      httpRate: c.HTTP_RATE_LIMIT === undefined ? undefined : { max: c.HTTP_RATE_LIMIT, windowMs: c.HTTP_RATE_WINDOW * 1000 },
      overloadUtilization: c.OVERLOAD_UTILIZATION,
    },
    mediaWorkers: c.MEDIA_WORKERS,
    logLevel: c.LOG_LEVEL,
    recordingsDir: c.RECORDINGS_DIR,
    auth: {
      ...(development
        ? { apiKey: 'devkey', apiSecret: randomBytes(32).toString('base64url'), development: true }
        : { apiKey: c.API_KEY!, apiSecret: c.API_SECRET!, development: false }),
      tokenLimits: { maxLifetimeSeconds: c.MAX_TOKEN_LIFETIME, clockSkewSeconds: c.TOKEN_CLOCK_SKEW },
    },
    cluster:
      c.REDIS_URL === undefined
        ? undefined
        : { redisUrl: c.REDIS_URL, nodeId: c.NODE_ID, publicUrl: c.PUBLIC_URL?.replace(/\/+$/, ''), secret: c.CLUSTER_SECRET!, keyPrefix: 'scv:' },
    drainTimeoutMs: c.DRAIN_TIMEOUT * 1000,
  };
}
