import { parseArgs } from 'node:util';
import { z } from 'zod';

/**
 * The load tool's options: `Options` (zod) is both the type and the validator of what
 * `parseOptions` reads from the command line.
 */
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const num = (min: number, max: number) => z.coerce.number().min(min).max(max);

export const Options = z
  .object({
    /**
     * ws(s)://host:port/video/ws of a running service, or several (comma-separated: the
     * nodes of a cluster, participants spread round-robin, a rejoin tries the next); absent:
     * start one in-process.
     */
    url: z
      .string()
      .regex(/^wss?:\/\/[^\s,]+(,wss?:\/\/[^\s,]+)*$/, 'must be a ws:// or wss:// URL, e.g. ws://127.0.0.1:7880/video/ws, or several separated by commas')
      .optional(),
    apiKey: z.string().min(1).optional(),
    apiSecret: z.string().min(1).optional(),
    rooms: int(1, 10_000).default(1),
    /** Per room. */
    publishers: int(0, 1000).default(1),
    /** Subscribe-only participants per room. */
    subscribers: int(0, 10_000).default(1),
    /** kbps of VP8 payload per publisher. */
    videoBitrate: num(10, 100_000).default(1500),
    fps: num(1, 120).default(30),
    audio: z.boolean().default(true),
    /** Seconds measured after every participant has joined (or failed to). */
    duration: num(1, 7 * 24 * 3600).default(30),
    /** Participants started per second (all rooms together). */
    joinRate: num(0.1, 1000).default(5),
    /** Seconds one participant may take to join, publish and connect. */
    joinTimeout: num(1, 600).default(20),
    json: z.string().min(1).optional(),
    roomPrefix: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/)
      .default('loadtest'),
    /** Run the in-process server inside a fresh network namespace (default; ignored with --url). */
    netns: z.boolean().default(true),
  })
  .refine((o) => o.publishers + o.subscribers >= 1, { message: 'need at least one publisher or subscriber per room', path: ['publishers'] })
  .refine((o) => o.url === undefined || (o.apiKey !== undefined && o.apiSecret !== undefined), {
    message: '--url needs --api-key and --api-secret (tokens are minted with them)',
    path: ['apiKey'],
  })
  .refine((o) => o.url !== undefined || (o.apiKey === undefined && o.apiSecret === undefined), {
    message: '--api-key/--api-secret only go with --url (the in-process server has its own)',
    path: ['apiKey'],
  });
export type Options = z.infer<typeof Options>;

export const USAGE = `Usage: npm run loadtest -- [options]

Real WebRTC participants (werift) join rooms over the signaling protocol v1, publish
synthetic VP8 (+ Opus) and receive each other; prints progress every second and a summary.

Target (default: start the service in-process, inside a private network namespace):
  --url ws://HOST:PORT/video/ws   a running service; several URLs separated by commas
                                  (a cluster's nodes): participants spread round-robin
                                  over them, and a rejoin tries the next
  --api-key KEY --api-secret S    its SCV_API_KEY / SCV_API_SECRET (to mint tokens)
  --no-netns                      in-process mode: do not make a network namespace
                                  (only when already inside one, e.g. under npm test)
Load:
  --rooms N                 rooms (default 1)
  --publishers N            publishers per room, each also subscribes (default 1)
  --subscribers N           subscribe-only participants per room (default 1)
  --video-bitrate KBPS      VP8 payload bitrate per publisher (default 1500)
  --fps N                   video frame rate (default 30)
  --audio / --no-audio      Opus-sized audio, 20 ms packets at 50/s (default on)
  --duration S              seconds measured after the joins (default 30)
  --join-rate N             participants started per second (default 5)
  --join-timeout S          seconds one participant may take to join (default 20)
  --room-prefix P           room names are P-<run id>-<n> (default loadtest)
Output:
  --json PATH               also write the summary as JSON
  --help

A participant whose socket drops, or who is told "left" because its node or media worker
died or its room moved, rejoins by itself like the SDK (at once, then after 0.25, 0.5, 1,
2, 4, 8 s…), publishes and receives again; the summary counts the rejoins and the time
from the drop to media again.

Exit status: 0 on success; 1 if a join or rejoin failed, media did not come back after a
rejoin, or fewer tracks were received than expected at the end; 2 on bad options or when
the target cannot be started.`;

export class UsageError extends Error {
  override name = 'UsageError';
}

/** Parses argv (without node and script); throws `UsageError`. Returns undefined for --help. */
export function parseOptions(argv: readonly string[]): Options | undefined {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      allowNegative: true,
      strict: true,
      options: {
        url: { type: 'string' },
        'api-key': { type: 'string' },
        'api-secret': { type: 'string' },
        rooms: { type: 'string' },
        publishers: { type: 'string' },
        subscribers: { type: 'string' },
        'video-bitrate': { type: 'string' },
        fps: { type: 'string' },
        audio: { type: 'boolean' },
        duration: { type: 'string' },
        'join-rate': { type: 'string' },
        'join-timeout': { type: 'string' },
        json: { type: 'string' },
        'room-prefix': { type: 'string' },
        netns: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help === true) return undefined;
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values)) {
    if (v !== undefined && k !== 'help') raw[k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] = v;
  }
  const parsed = Options.safeParse(raw);
  if (!parsed.success) {
    const flag = (p: PropertyKey | undefined) => `--${String(p ?? '?').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    throw new UsageError(parsed.error.issues.map((i) => `${flag(i.path[0])}: ${i.message}`).join('\n'));
  }
  return parsed.data;
}
