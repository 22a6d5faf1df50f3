// The server's Prometheus metrics (prom-client, one registry per server so two servers in a process, or a
// server beside the application's own metrics, never mix).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import { native } from '../native.js';
import type { Gate } from './gate.js';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'status'>;
  readonly errors: Counter<'code'>;
  readonly audioSeconds: Counter;
  readonly tokens: Counter;
  readonly rtf: Histogram;
  readonly tokensPerSecond: Histogram;
  readonly requestSeconds: Histogram<'route'>;
  /** WebSocket realtime sessions open now (handshake done, not yet closed). */
  readonly realtimeSessions: Gauge;
  /** Seconds of audio decoded by realtime sessions (also counted in audioSeconds). */
  readonly realtimeAudioSeconds: Counter;

  constructor(gate: Gate) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'rustasr_' });
    this.requests = new Counter({
      name: 'rustasr_http_requests_total',
      help: 'HTTP requests answered, by route and status code',
      labelNames: ['route', 'status'],
      registers,
    });
    this.errors = new Counter({
      name: 'rustasr_errors_total',
      help: 'Failed requests by error code (the code of the OpenAI error body; client_closed for disconnects)',
      labelNames: ['code'],
      registers,
    });
    this.audioSeconds = new Counter({ name: 'rustasr_audio_seconds_total', help: 'Seconds of audio transcribed', registers });
    this.tokens = new Counter({ name: 'rustasr_tokens_total', help: 'Tokens generated', registers });
    this.rtf = new Histogram({
      name: 'rustasr_rtf',
      help: 'Real-time factor of each transcription (processing time / audio length)',
      buckets: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5],
      registers,
    });
    this.tokensPerSecond = new Histogram({
      name: 'rustasr_decode_tokens_per_second',
      help: 'Decode speed of each transcription (generated tokens / decode time)',
      buckets: [5, 10, 20, 30, 50, 75, 100, 200, 500, 1000, 2000, 5000],
      registers,
    });
    this.requestSeconds = new Histogram({
      name: 'rustasr_request_duration_seconds',
      help: 'Time from request to the end of the response, by route',
      labelNames: ['route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.realtimeSessions = new Gauge({
      name: 'rustasr_realtime_sessions',
      help: 'WebSocket realtime sessions open now (GET /v1/realtime)',
      registers,
    });
    this.realtimeAudioSeconds = new Counter({
      name: 'rustasr_realtime_audio_seconds_total',
      help: 'Seconds of audio decoded by realtime sessions (included in rustasr_audio_seconds_total)',
      registers,
    });
    new Gauge({
      name: 'rustasr_queue_depth',
      help: 'Admitted transcription requests waiting for a session slot (uploading or queued)',
      registers,
      collect() {
        this.set(gate.waiting);
      },
    });
    new Gauge({
      name: 'rustasr_sessions_running',
      help: 'Transcription sessions running now',
      registers,
      collect() {
        this.set(gate.running);
      },
    });
    new Gauge({
      name: 'rustasr_native_live_objects',
      help: 'Native engine objects alive in this process (kind: models, sessions, aligners); sessions and aligners return to 0 when idle',
      labelNames: ['kind'],
      registers,
      collect() {
        const live = native().liveObjects();
        this.set({ kind: 'models' }, live.models);
        this.set({ kind: 'sessions' }, live.sessions);
        this.set({ kind: 'aligners' }, live.aligners);
      },
    });
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
