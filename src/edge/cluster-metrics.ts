import { Counter, Gauge, type Registry } from 'prom-client';
import type { Cluster } from '../cluster/cluster.ts';
import { scrapedGauge } from '../http/metrics.ts';
import type { RelayCounts } from './relay-counts.ts';
import type { WorkerPool } from './worker-pool.ts';

/**
 * The cluster's gauges on the edge's own registry (/metrics of a cluster node only), read
 * at scrape time: the node's view and Redis as `/healthz` reports them, the rooms its
 * workers host, and what it relays node to node.
 */
export function clusterMetrics(registry: Registry, cluster: Cluster, pool: WorkerPool, counts: RelayCounts): void {
  const gauge = (name: string, help: string, read: () => number) => scrapedGauge(registry, name, help, read);
  gauge('scv_cluster_nodes', 'Live cluster nodes in this node\'s view, this one included', () => cluster.health().nodes);
  gauge('scv_cluster_rooms_hosted', 'Rooms this node\'s media workers host', () => pool.workers().reduce((n, w) => n + w.rooms.size, 0));
  gauge('scv_cluster_redis_up', '1 while Redis answers this node, else 0', () => (cluster.health().redis === 'up' ? 1 : 0));
  gauge('scv_cluster_draining', '1 while this node drains (takes no new rooms), else 0', () => (cluster.health().draining ? 1 : 0));
  new Gauge({
    name: 'scv_cluster_relayed_connections',
    help: 'WebSocket sessions relayed now: out = this node relays them to the hosting node, in = relayed here by another node',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.set({ direction: 'out' }, counts.connections.out);
      this.set({ direction: 'in' }, counts.connections.in);
    },
  });
  new Counter({
    name: 'scv_cluster_relayed_requests_total',
    help: 'HTTP requests relayed node to node since the start: out = to the hosting node, in = relayed here by another node',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ direction: 'out' }, counts.requests.out);
      this.inc({ direction: 'in' }, counts.requests.in);
    },
  });
}
