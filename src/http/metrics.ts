import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { NEGOTIATION_FAILURE_REASONS, PACKET_DROP_REASONS, type MediaStats } from '../sfu/media-stats.ts';
import type { Sfu } from '../sfu/sfu.ts';

/** A gauge on `registry` that reads its value at scrape time. */
export function scrapedGauge(registry: Registry, name: string, help: string, read: () => number): Gauge {
  return new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** Prometheus metrics, read from the SFU at scrape time so nothing is counted twice. */
export function createMetrics(sfu: Sfu): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'scv_process_' });
  const gauge = (name: string, help: string, read: () => number) => scrapedGauge(registry, name, help, read);
  gauge('scv_rooms', 'Rooms open on this node', () => sfu.roomCount);
  gauge('scv_participants', 'Participants connected on this node', () => sfu.participantCount());
  gauge('scv_published_tracks', 'Tracks being published', () => sfu.publishedTrackCount());
  gauge('scv_overload_shed_ratio', 'Share of video subscriptions not forwarded because the process is overloaded (0-1)', () => sfu.overload.shedRatio);
  const counter = (name: string, help: string, key: Exclude<keyof MediaStats, 'mediaPacketsDropped' | 'negotiationFailures'>) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sfu.stats[key]);
      },
    });
  counter('scv_rtp_packets_received_total', 'RTP packets received from publishers', 'packetsReceived');
  counter('scv_rtp_bytes_received_total', 'RTP payload bytes received from publishers', 'bytesReceived');
  counter('scv_rtp_packets_forwarded_total', 'RTP packets forwarded to subscribers', 'packetsForwarded');
  counter('scv_rtp_bytes_forwarded_total', 'RTP payload bytes forwarded to subscribers', 'bytesForwarded');
  counter('scv_rtp_packets_dropped_total', 'Packets not forwarded to a subscriber (not connected, waiting for keyframe, stale, shed under overload)', 'packetsDropped');
  counter('scv_rtp_packets_shed_total', 'Video packets not forwarded to a subscriber because the process was overloaded', 'packetsShed');
  counter('scv_nacks_received_total', 'NACK feedback packets received from subscribers', 'nacksReceived');
  counter('scv_nacks_sent_total', 'NACK feedback packets sent to publishers', 'nacksSent');
  counter('scv_plis_received_total', 'PLI feedback received from subscribers', 'plisReceived');
  counter('scv_firs_received_total', 'FIR feedback received from subscribers', 'firsReceived');
  counter('scv_keyframe_requests_sent_total', 'Keyframe requests (PLI) sent to publishers', 'keyframeRequestsSent');
  counter('scv_twcc_feedback_sent_total', 'Transport-wide congestion control feedback packets sent', 'twccFeedbackSent');
  counter('scv_werift_adapter_failures_total', "Transports closed because werift's internal fields were not what the adapter expects (docs/werift.md)", 'weriftAdapterFailures');
  new Counter({
    name: 'scv_media_packets_dropped_total',
    help: 'Inbound media-port datagrams dropped before DTLS/SRTP (unauthenticated STUN, unvalidated source, plaintext DTLS after the handshake, handshake buffer full, malformed)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const reason of PACKET_DROP_REASONS) this.inc({ reason }, sfu.stats.mediaPacketsDropped[reason]);
    },
  });
  new Counter({
    name: 'scv_negotiation_failures_total',
    help: 'Subscriber offers given up and sent afresh: answer refused (invalid_answer), none within the timeout (timeout), or the offer itself failed (offer_failed)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const reason of NEGOTIATION_FAILURE_REASONS) this.inc({ reason }, sfu.stats.negotiationFailures[reason]);
    },
  });
  return registry;
}
