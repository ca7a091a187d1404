/**
 * What this edge relays node to node, for its cluster gauges (/metrics): WebSocket sessions
 * open now and HTTP requests since the start, each way. `out`: to another node; `in`:
 * arrived relayed from one (its hop's credential checked out).
 */
export class RelayCounts {
  readonly connections = { out: 0, in: 0 };
  readonly requests = { out: 0, in: 0 };
}
