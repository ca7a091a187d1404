/**
 * A plain round-robin TCP (L4) load balancer in front of a cluster's nodes, as a test
 * deployment would put one: each accepted connection goes to the next backend in turn,
 * bytes are piped both ways untouched, and there are no health checks, so a connection
 * handed to a dead backend just fails (the client's connection is closed). Real sockets
 * (node:net), not a mock.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface Backend {
  host: string;
  port: number;
}

export class RoundRobinProxy {
  readonly port: number;
  /** Connections handed to each backend (by index), and those whose backend refused them. */
  readonly handed: number[];
  refused = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private next = 0;
  private closing: Promise<void> | undefined;

  private constructor(server: Server, port: number, backends: number) {
    this.server = server;
    this.port = port;
    this.handed = new Array<number>(backends).fill(0);
  }

  static async start(backends: Backend[]): Promise<RoundRobinProxy> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const proxy = new RoundRobinProxy(server, (server.address() as { port: number }).port, backends.length);
    server.on('connection', (client) => proxy.accept(client, backends));
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private accept(client: Socket, backends: Backend[]): void {
    const index = this.next;
    this.next = (this.next + 1) % backends.length;
    this.handed[index]!++;
    const upstream = createConnection(backends[index]!);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
      s.setNoDelay(true);
    }
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') this.refused++;
      client.destroy();
    });
    client.once('error', () => upstream.destroy());
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Stops accepting and cuts every connection; idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
    return this.closing;
  }
}
