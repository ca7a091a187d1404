import type { Grant } from '../../src/auth/tokens.ts';
import { loadConfig } from '../../src/config.ts';
import type { TokenService } from '../../src/auth/tokens.ts';
import { type EdgeService, startEdge } from '../../src/edge/edge-service.ts';
import { startService, type Service } from '../../src/service.ts';
import { TestClient, type TestClientOptions } from './client.ts';

/** What the helpers need of a running node, whether its media is in-process or in workers. */
interface RunningNode {
  httpUrl: string;
  wsUrl: string;
  tokens: TokenService;
  close(): Promise<void>;
}

const testConfig = (env: Record<string, string>) =>
  loadConfig({ SCV_HTTP_PORT: '0', SCV_LOG_LEVEL: process.env.SCV_TEST_LOG_LEVEL ?? 'silent', ...env });

/** A real service on an ephemeral port, plus shortcuts to mint tokens and join clients. */
export class TestService<S extends RunningNode = Service> {
  readonly service: S;
  private readonly clients = new Set<TestClient>();

  private constructor(service: S) {
    this.service = service;
  }

  /**
   * Media in the test's own process, so a test can look inside the SFU. The test's own
   * peers share its event loop, so the loop's utilization says nothing about the SFU:
   * overload shedding is off unless the test asks for it.
   */
  static async start(env: Record<string, string> = {}): Promise<TestService> {
    return new TestService(await startService(testConfig({ SCV_OVERLOAD_UTILIZATION: 'off', ...env })));
  }

  /**
   * The node a suite that runs both ways asks for: in-process media, or with
   * TEST_EDGE_WORKERS=N the edge and N worker processes (see the *.edge.test.ts files).
   */
  static async startEither(env: Record<string, string> = {}): Promise<TestService<Service | EdgeService>> {
    const workers = Number(process.env.TEST_EDGE_WORKERS ?? 0);
    return workers > 0 ? TestService.startEdge(workers, env) : TestService.start(env);
  }

  /** The edge with `workers` media worker processes behind it (SCV_MEDIA_WORKERS). */
  static async startEdge(workers: number, env: Record<string, string> = {}): Promise<TestService<EdgeService>> {
    return new TestService(await startEdge(testConfig({ ...env, SCV_MEDIA_WORKERS: String(workers) })));
  }

  get httpUrl(): string {
    return this.service.httpUrl;
  }

  token(identity: string, room: string | undefined, grants: Grant[] = ['publish', 'subscribe'], ttlSeconds?: number): Promise<string> {
    return this.service.tokens.mint({ identity, room, grants, ttlSeconds });
  }

  /** A joined client; closed by `close()` if the test does not close it. */
  async join(identity: string, room: string, opts: Partial<TestClientOptions> & { grants?: Grant[] } = {}): Promise<TestClient> {
    const token = await this.token(identity, room, opts.grants);
    const c = await TestClient.join({ wsUrl: this.service.wsUrl, token, name: identity, ...opts });
    this.clients.add(c);
    return c;
  }

  track(c: TestClient): TestClient {
    this.clients.add(c);
    return c;
  }

  async fetch(path: string, init: RequestInit = {}): Promise<{ status: number; body: any; headers: Headers }> {
    const res = await fetch(`${this.httpUrl}${path}`, init);
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON (metrics, SDP): keep the text
    }
    return { status: res.status, body, headers: res.headers };
  }

  /** Reads one Prometheus sample value. */
  async metric(name: string): Promise<number> {
    const { body } = await this.fetch('/metrics');
    const line = String(body)
      .split('\n')
      .find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line === undefined ? Number.NaN : Number(line.split(' ').pop());
  }

  async close(): Promise<void> {
    await Promise.all([...this.clients].map((c) => c.close()));
    await this.service.close();
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns true, or fails with `what`. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Edge nodes of one cluster (one media worker each) on `redisUrl`, started one after the
 * other (a media worker's start is CPU-bound), resolved once every node sees all of them.
 * `env(id, i)` adds each node's own settings.
 */
export async function startCluster(
  redisUrl: string,
  secret: string,
  ids: string[],
  env: (id: string, i: number) => Record<string, string>,
): Promise<TestService<EdgeService>[]> {
  const nodes: TestService<EdgeService>[] = [];
  try {
    for (const [i, id] of ids.entries()) {
      nodes.push(await TestService.startEdge(1, { SCV_REDIS_URL: redisUrl, SCV_CLUSTER_SECRET: secret, SCV_NODE_ID: id, ...env(id, i) }));
    }
    await eventually(() => nodes.every((n) => n.service.cluster!.nodes().length === ids.length), `the ${ids.length} nodes to see each other`, 5000);
  } catch (err) {
    await Promise.all(nodes.map((n) => n.close()));
    throw err;
  }
  return nodes;
}
