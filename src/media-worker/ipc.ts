import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { Config } from '../config.ts';

/**
 * The IPC channel between the edge and one media worker process. Signaling and HTTP go
 * over the worker's loopback HTTP port; this channel carries only what the edge needs to
 * run the pool: start-up, load, metrics and stop.
 */
export type EdgeToWorker =
  /** The edge's parsed config; the worker overrides its HTTP address, ports and worker count. */
  | { type: 'start'; index: number; config: Config; portRange: [number, number] | undefined }
  | { type: 'metrics'; id: number }
  /** The room lives on elsewhere (src/cluster): close it here, telling its participants why. */
  | { type: 'closeRoom'; room: string; reason: 'room_moved' }
  | { type: 'stop' };

export type WorkerToEdge =
  | { type: 'ready'; httpUrl: string; wsUrl: string }
  /**
   * Sent when the rooms, the participant or track count or shedding change, and at least
   * every LOAD_REFRESH_MS with the counters (the cluster's node record, src/cluster).
   */
  | {
      type: 'load';
      rooms: string[];
      participants: number;
      tracks: number;
      /** Cumulative since the worker started. */
      packetsForwarded: number;
      /** Event-loop utilization since the last report, 0-1. */
      utilization: number;
      shedding: boolean;
    }
  | { type: 'metrics'; id: number; metrics: MetricObjectWithValues<MetricValue<string>>[] };

/** How often a worker looks for load changes to report. */
export const LOAD_REPORT_INTERVAL_MS = 250;
/** Longest time between two load reports, changed or not: the cluster's heartbeat period. */
export const LOAD_REFRESH_MS = 1000;
