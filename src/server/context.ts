// What a route sees of the server, and the two kinds of route: plain HTTP handlers and WebSocket upgrades.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

import type { Model } from '../api/model.js';
import type { Gate } from './gate.js';
import type { ServerMetrics } from './metrics.js';
import type { UploadLimits } from './upload.js';

export interface ServerContext {
  /** The loaded model; undefined while it loads (or when loading failed): transcription routes answer 503. */
  readonly model: Model | undefined;
  /**
   * The forced aligner (ServeOptions.aligner) once the server is ready; undefined without one: word
   * timestamps are then refused and srt/vtt cue times estimated.
   */
  readonly aligner: Model | undefined;
  /** Why the model could not be loaded (undefined while it loads, and once it is loaded). */
  readonly modelError: Error | undefined;
  /** The id clients name in `model` fields and that GET /v1/models lists. */
  readonly modelId: string;
  /** Other names accepted for the model in `model` fields (e.g. the --model argument as given). */
  readonly modelAliases: readonly string[];
  /** Unix seconds when the model finished loading (the `created` field of /v1/models). */
  readonly modelCreated: number;
  /** Admission control shared by every session-running route (HTTP and WebSocket). */
  readonly gate: Gate;
  readonly metrics: ServerMetrics;
  readonly upload: UploadLimits;
  /** Most tokens generated per segment (--max-new-tokens). */
  readonly maxNewTokens: number | undefined;
  /** The repetition early stop (ServeOptions.repetitionGuard). */
  readonly repetitionGuard: boolean;
  /** True once shutdown began: no new sessions are started, running ones finish. */
  readonly draining: boolean;
  /**
   * Fires when shutdown begins (close(), SIGTERM): open-ended sessions (a live WebSocket) should finish
   * what they have (final results) and close, so the drain does not wait for the deadline.
   */
  readonly drainSignal: AbortSignal;
  /** Fires when the drain deadline passes: whatever still runs must stop (its requests get 503). */
  readonly shutdownSignal: AbortSignal;
}

/** A plain HTTP route. The server checks the method, the API key (when `auth`) and maps thrown errors. */
export interface HttpRoute {
  /** Label of the route in metrics. */
  readonly name: string;
  readonly methods: readonly string[];
  /** The exact path, or a pattern whose groups are passed to handle(). */
  readonly path: string | RegExp;
  /** Whether the API key is required (every route but the health probes). */
  readonly auth: boolean;
  /** Still served while draining (probes, metrics); other routes answer 503 once shutdown began. */
  readonly whileDraining?: boolean;
  handle(req: IncomingMessage, res: ServerResponse, ctx: ServerContext, params: readonly string[]): Promise<void> | void;
}

/**
 * A WebSocket route (an HTTP Upgrade request on `path`). The server has checked the path, the API key
 * (when `auth`) and that it is not draining; upgrade() owns `socket` from then on: typically a `ws`
 * WebSocketServer created with `{ noServer: true }` whose handleUpgrade(req, socket, head, cb) completes
 * the handshake (refuseUpgrade() from ./errors.js answers an HttpError instead, e.g. 429 when
 * `ctx.gate.enter()` gives no ticket). A session should hold a `ctx.gate` ticket while it runs (so it
 * counts against --max-concurrent and the drain waits for it), wind down when `ctx.drainSignal` fires and
 * stop at once when `ctx.shutdownSignal` does.
 */
export interface UpgradeRoute {
  readonly name: string;
  readonly path: string;
  readonly auth: boolean;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, ctx: ServerContext): void;
}
