// GET /v1/realtime: live recognition over a WebSocket (`ws`, noServer), on top of listen() / LiveTranscriber.
//
//   client -> server   an optional first text message {"type":"config", ...options}; binary messages of audio
//                      (PCM16 by default, or the declared input format); a text {"type":"end"} ends the input
//   server -> client   {"type":"ready"} once the session runs; every LiveEvent ({"type":"partial"|"final",...})
//                      as a text message; {"type":"error","status",error} on failure; then a close frame
//
// Admission: a gate ticket is taken at the upgrade (429 before the handshake when none is left); the session
// holds a queue place until its options are known, and a run slot from then until it closes. Backpressure:
// the socket is paused while the live stream's writable side is full, so a client sending faster than the
// engine decodes is slowed by TCP, not buffered. A close frame or a dropped connection aborts the session
// (no final) and frees its native session. Drain (SIGTERM, close()): the input ends where it is, the last
// finals are sent, then the socket closes with 1001; past the drain deadline: error 503 shutting_down.
import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';

import { WebSocket, WebSocketServer, type RawData } from 'ws';

import { isAbortError } from '../../core/abort.js';
import { LIVE_DEFAULTS } from '../../core/live.js';
import type { Model } from '../../core/model.js';
import { LiveTranscriber, type ListenOptions, type LiveEvent, type LiveOptions, type RawAudioFormat } from '../../api/listen.js';
import type { ServerContext, UpgradeRoute } from '../context.js';
import { HttpError, refuseUpgrade, toHttpError } from '../errors.js';
import type { Ticket } from '../gate.js';
import { languageName } from '../languages.js';
import { isServedModel, modelNotFound } from './models.js';

/** Largest message a client may send (one binary frame of audio, or a text message): 1 MiB, about 32 s of 16 kHz PCM16. */
export const REALTIME_MAX_MESSAGE_BYTES = 1 << 20;
/** Audio held for a session that does not run yet (waiting for a slot) before the socket is paused. */
const PENDING_LIMIT_BYTES = 1 << 20;
/** With `endpoint: false` the stream is one segment that grows with the input: it is cut off here (the SDK's longest offline segment). */
export const REALTIME_MAX_UNSEGMENTED_SECONDS = 1200;
/** How long a closing socket waits for the client's close frame before it is destroyed. */
const CLOSE_TIMEOUT_MS = 5000;

/** The audio formats a client may declare: PCM16 (s16le) and float32 (f32le) headerless frames, or a WAV stream. */
export const REALTIME_INPUT_FORMATS = ['pcm16', 'float32', 'wav'] as const;
export type RealtimeInputFormat = (typeof REALTIME_INPUT_FORMATS)[number];

export interface RealtimeInput {
  format: RealtimeInputFormat;
  /** Headerless formats: samples per second (default 16000) and interleaved channels (default 1). */
  sampleRate?: number;
  channels?: number;
}

/** The session's options, from the config message (defaults without one). */
export interface RealtimeConfig {
  live: Omit<LiveOptions, 'signal'>;
  input: RealtimeInput;
}

const NUMBER_OPTIONS = [
  'chunkSeconds',
  'unfixedChunks',
  'unfixedTokens',
  'maxNewTokens',
  'maxPrefixTokens',
  'maxSegmentSeconds',
  'minSilenceMs',
  'thresholdDb',
  'relativeDb',
] as const;
const BOOLEAN_OPTIONS = ['exact', 'endpoint', 'pastText'] as const;
const STRING_OPTIONS = ['model', 'language', 'context'] as const;
const CONFIG_KEYS = new Set<string>(['type', 'input', ...NUMBER_OPTIONS, ...BOOLEAN_OPTIONS, ...STRING_OPTIONS]);

const badValue = (param: string, message: string) => new HttpError(400, 'invalid_value', message, param);

function parseInput(v: unknown): RealtimeInput {
  const spec = typeof v === 'string' ? { format: v } : v;
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
    throw badValue('input', `input must be ${REALTIME_INPUT_FORMATS.map((f) => JSON.stringify(f)).join(', ')} or { format, sampleRate?, channels? }`);
  }
  const o = spec as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== 'format' && k !== 'sampleRate' && k !== 'channels') throw new HttpError(400, 'unknown_parameter', `unknown input field ${JSON.stringify(k)}`, `input.${k}`);
  }
  if (!(REALTIME_INPUT_FORMATS as readonly unknown[]).includes(o['format'])) {
    throw badValue('input.format', `input.format must be one of ${REALTIME_INPUT_FORMATS.join(', ')}, got ${JSON.stringify(o['format'])}`);
  }
  const format = o['format'] as RealtimeInputFormat;
  if (format === 'wav') {
    if (o['sampleRate'] !== undefined || o['channels'] !== undefined) {
      throw badValue('input', 'a WAV input carries its own sample rate and channels: give input.format only');
    }
    return { format };
  }
  const sampleRate = o['sampleRate'] ?? 16000;
  const channels = o['channels'] ?? 1;
  if (typeof sampleRate !== 'number' || !Number.isInteger(sampleRate) || sampleRate < 1000 || sampleRate > 384_000) {
    throw badValue('input.sampleRate', `input.sampleRate must be an integer from 1000 to 384000, got ${JSON.stringify(sampleRate)}`);
  }
  if (typeof channels !== 'number' || !Number.isInteger(channels) || channels < 1 || channels > 64) {
    throw badValue('input.channels', `input.channels must be an integer from 1 to 64, got ${JSON.stringify(channels)}`);
  }
  return { format, sampleRate, channels };
}

/**
 * Checks a config message (types and names; ranges are checked by the live recogniser, as INVALID_OPTION).
 * `language` takes ISO codes as the transcription route does; `maxNewTokens` (per step) is capped by the
 * server's --max-new-tokens.
 */
export function parseRealtimeConfig(msg: Record<string, unknown>, ctx: ServerContext): RealtimeConfig {
  for (const k of Object.keys(msg)) {
    if (!CONFIG_KEYS.has(k)) throw new HttpError(400, 'unknown_parameter', `unknown config field ${JSON.stringify(k)}`, k);
  }
  const live: Record<string, unknown> = {};
  for (const k of NUMBER_OPTIONS) {
    const v = msg[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw badValue(k, `${k} must be a number, got ${JSON.stringify(v)}`);
    live[k] = v;
  }
  for (const k of BOOLEAN_OPTIONS) {
    const v = msg[k];
    if (v === undefined) continue;
    if (typeof v !== 'boolean') throw badValue(k, `${k} must be true or false, got ${JSON.stringify(v)}`);
    live[k] = v;
  }
  for (const k of STRING_OPTIONS) {
    const v = msg[k];
    if (v !== undefined && typeof v !== 'string') throw badValue(k, `${k} must be a string, got ${JSON.stringify(v)}`);
  }
  const model = msg['model'] as string | undefined;
  if (model !== undefined && model !== '' && !isServedModel(ctx, model)) throw modelNotFound(ctx, model);
  const language = msg['language'] as string | undefined;
  if (language !== undefined && language.trim() !== '') live['language'] = languageName(language);
  const context = msg['context'] as string | undefined;
  if (context !== undefined && context !== '') live['context'] = context;
  if (ctx.maxNewTokens !== undefined) live['maxNewTokens'] = Math.min((live['maxNewTokens'] as number | undefined) ?? LIVE_DEFAULTS.maxNewTokens, ctx.maxNewTokens);
  const input = msg['input'] === undefined ? { format: 'pcm16' as const, sampleRate: 16000, channels: 1 } : parseInput(msg['input']);
  return { live: live as RealtimeConfig['live'], input };
}

function listenInput(i: RealtimeInput): Pick<ListenOptions, 'input' | 'raw'> {
  if (i.format === 'wav') return { input: 'wav' };
  const raw: RawAudioFormat = { sampleRate: i.sampleRate ?? 16000, channels: i.channels ?? 1, encoding: i.format === 'pcm16' ? 's16le' : 'f32le' };
  return { input: 'bytes', raw };
}

/** What the client sees of an event: the LiveEvent, with `language: null` when none is known. */
function eventMessage(e: LiveEvent): Record<string, unknown> {
  return { ...e, language: e.language ?? null };
}

/** The client went away (a close frame or a dropped connection): no message can reach it. */
class ClientGone extends Error {}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}

/** One WebSocket session: its protocol state, the live stream, and its end (close code, metrics, ticket). */
class RealtimeSession {
  private readonly t0 = performance.now();
  /** Aborted when the session must stop at once: the client left, a protocol error, the drain deadline. */
  private readonly stop = new AbortController();
  private config: RealtimeConfig | null | undefined;
  private configured!: (c: RealtimeConfig | null) => void;
  private readonly configuredP = new Promise<RealtimeConfig | null>((resolve) => (this.configured = resolve));
  private live: LiveTranscriber | undefined;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private paused = false;
  private inputEnded = false;
  /** The input was cut by the drain (close code 1001). */
  private drained = false;
  /** Set once the session closes the socket itself (its 'close' is then no disconnect). */
  private closing = false;
  private counted = 0;
  private readonly onDrain = () => this.endInput(true);
  private readonly onShutdown = () => this.fail(new HttpError(503, 'shutting_down', 'the server is shutting down; the session was stopped'));

  constructor(
    private readonly ws: WebSocket,
    private readonly model: Model,
    private readonly ticket: Ticket,
    private readonly ctx: ServerContext,
  ) {
    ctx.metrics.realtimeSessions.inc();
    ws.on('message', (data: RawData, isBinary: boolean) => this.onMessage(data as Buffer, isBinary));
    ws.on('error', (err: Error & { code?: string }) => {
      // ws closes the connection itself (1009 for a message over maxPayload, 1002 for a bad frame).
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.fail(new HttpError(413, 'message_too_large', `a message exceeded ${REALTIME_MAX_MESSAGE_BYTES} bytes`));
      else this.fail(new HttpError(400, 'invalid_frame', err.message));
    });
    ws.on('close', () => {
      if (!this.closing && !this.stop.signal.aborted) this.stop.abort(new ClientGone('the client closed the connection'));
    });
    if (ctx.drainSignal.aborted) queueMicrotask(this.onDrain);
    else ctx.drainSignal.addEventListener('abort', this.onDrain, { once: true });
    if (ctx.shutdownSignal.aborted) queueMicrotask(this.onShutdown);
    else ctx.shutdownSignal.addEventListener('abort', this.onShutdown, { once: true });
    void this.run();
  }

  /** Stops the session with `err` (sent to the client when it can still be reached). */
  private fail(err: Error): void {
    if (!this.stop.signal.aborted) this.stop.abort(err);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    // After end (or the drain) every message is dropped: nothing a client sends then can cost it its final.
    if (this.stop.signal.aborted || this.inputEnded) return;
    if (!isBinary) {
      this.onText(data.toString('utf8'));
      return;
    }
    if (this.config === undefined) this.setConfig({});
    if (this.stop.signal.aborted) return;
    const live = this.live;
    if (live === undefined) {
      // Not running yet: held, up to a bound, then the socket waits.
      this.pending.push(data);
      this.pendingBytes += data.length;
      if (this.pendingBytes >= PENDING_LIMIT_BYTES) this.pause();
      return;
    }
    if (live.destroyed || live.writableEnded) return;
    if (!live.write(data)) this.pauseUntilDrain(live);
  }

  private onText(text: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      this.fail(new HttpError(400, 'invalid_json', 'a text message must be a JSON object'));
      return;
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      this.fail(new HttpError(400, 'invalid_json', 'a text message must be a JSON object'));
      return;
    }
    const m = msg as Record<string, unknown>;
    if (m['type'] === 'config') {
      if (this.config !== undefined) {
        this.fail(new HttpError(400, 'invalid_request', 'the config message must be the first message, and only one', 'type'));
        return;
      }
      this.setConfig(m);
    } else if (m['type'] === 'end') {
      this.endInput(false);
    } else {
      this.fail(new HttpError(400, 'invalid_request', `unknown message type ${JSON.stringify(m['type'])} (config, end, or binary audio)`, 'type'));
    }
  }

  private setConfig(m: Record<string, unknown>): void {
    try {
      this.config = parseRealtimeConfig(m, this.ctx);
      this.configured(this.config);
    } catch (err) {
      this.config = null;
      this.fail(err as Error);
    }
  }

  /** The input ends: by the client's end message, or the drain (the received audio is still decoded). */
  private endInput(byDrain: boolean): void {
    if (this.inputEnded) return;
    this.inputEnded = true;
    this.drained = byDrain;
    if (this.config === undefined) {
      this.config = null;
      this.configured(null); // nothing was sent: nothing to decode
    }
    if (this.live && !this.live.destroyed && !this.live.writableEnded) this.live.end();
    // Nothing more is taken: read on (later audio is dropped) so the close handshake is not stuck behind it.
    this.resume();
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.ws.pause();
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.resume();
  }

  /** Backpressure: the socket is read again once the live stream has taken what it holds. */
  private pauseUntilDrain(live: LiveTranscriber): void {
    if (this.paused) return;
    this.pause();
    live.once('drain', () => this.resume());
  }

  private send(msg: unknown): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN) return Promise.resolve();
    return new Promise<void>((resolve) => this.ws.send(JSON.stringify(msg), () => resolve()));
  }

  private countAudio(): void {
    const s = this.live?.audioSeconds ?? 0;
    if (s > this.counted) {
      this.ctx.metrics.audioSeconds.inc(s - this.counted);
      this.ctx.metrics.realtimeAudioSeconds.inc(s - this.counted);
      this.counted = s;
    }
  }

  private async run(): Promise<void> {
    const signal = this.stop.signal;
    let failure: HttpError | undefined;
    let gone = false;
    try {
      // A queue place until the options are known (an idle connection holds no run slot), then a run slot.
      const config = await abortable(this.configuredP, signal);
      if (config === null) return;
      await this.ticket.start(signal);
      const opts: ListenOptions = { ...config.live, model: this.model, ...listenInput(config.input), signal };
      const live = new LiveTranscriber(opts, { writableHighWaterMark: 1 });
      this.live = live;
      live.once('ready', () => void this.send({ type: 'ready', model: this.ctx.modelId, input: config.input }));
      const held = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      for (const b of held) live.write(b);
      if (this.inputEnded) live.end();
      if (live.writableNeedDrain) live.once('drain', () => this.resume());
      else this.resume();
      const unsegmented = config.live.endpoint === false;
      for await (const e of live) {
        this.countAudio();
        await abortable(this.send(eventMessage(e as LiveEvent)), signal);
        if (unsegmented && live.audioSeconds > REALTIME_MAX_UNSEGMENTED_SECONDS) {
          throw new HttpError(413, 'audio_too_long', `with endpoint: false a session takes at most ${REALTIME_MAX_UNSEGMENTED_SECONDS} s of audio`, 'endpoint');
        }
      }
    } catch (err) {
      const why: unknown = signal.aborted ? signal.reason : err;
      if (why instanceof ClientGone) gone = true;
      else if (why instanceof HttpError) failure = why;
      else if (isAbortError(err) && signal.aborted) failure = toHttpError(why);
      else failure = toHttpError(err);
    } finally {
      this.countAudio();
      this.end(failure, gone);
    }
  }

  private end(failure: HttpError | undefined, gone: boolean): void {
    const { ctx, ws } = this;
    ctx.drainSignal.removeEventListener('abort', this.onDrain);
    ctx.shutdownSignal.removeEventListener('abort', this.onShutdown);
    this.live?.destroy();
    this.ticket.release();
    ctx.metrics.realtimeSessions.dec();
    const status = gone ? 'client_closed' : failure ? String(failure.status) : '200';
    ctx.metrics.requests.inc({ route: 'realtime', status });
    ctx.metrics.requestSeconds.observe({ route: 'realtime' }, (performance.now() - this.t0) / 1000);
    if (gone || failure) ctx.metrics.errors.inc({ code: gone ? 'client_closed' : failure!.code });
    if (ws.readyState !== WebSocket.OPEN) return;
    this.closing = true;
    this.resume(); // the client's close frame may wait behind audio the paused socket has not read
    // A client that does not answer the close frame (or reads nothing) is cut off after a while.
    const cutOff = setTimeout(() => ws.terminate(), CLOSE_TIMEOUT_MS);
    cutOff.unref();
    ws.once('close', () => clearTimeout(cutOff));
    if (failure) {
      void this.send({ type: 'error', status: failure.status, ...failure.body() });
      ws.close(4000 + failure.status, failure.code);
    } else if (this.drained) {
      ws.close(1001, 'shutting_down');
    } else {
      ws.close(1000, 'end of input');
    }
  }
}

const servers = new WeakMap<ServerContext, WebSocketServer>();

/** The WebSocket server of one rustasr server (handshakes only: noServer, no client tracking). */
function wsServer(ctx: ServerContext): WebSocketServer {
  let wss = servers.get(ctx);
  if (!wss) {
    wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: REALTIME_MAX_MESSAGE_BYTES,
    });
    // A malformed handshake (no Sec-WebSocket-Key, a wrong version): answered as the other errors are.
    wss.on('wsClientError', (err: Error, socket: Duplex) => refuse(ctx, socket, new HttpError(400, 'invalid_handshake', err.message)));
    servers.set(ctx, wss);
  }
  return wss;
}

function refuse(ctx: ServerContext, socket: Duplex, e: HttpError): void {
  ctx.metrics.errors.inc({ code: e.code });
  ctx.metrics.requests.inc({ route: 'realtime', status: String(e.status) });
  refuseUpgrade(socket, e);
}

export const realtimeRoute: UpgradeRoute = {
  name: 'realtime',
  path: '/v1/realtime',
  auth: true,
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, ctx: ServerContext): void {
    const model = ctx.model;
    if (model === undefined) {
      const why = ctx.modelError === undefined ? 'the model is not loaded yet; retry when /readyz answers 200' : `the model failed to load: ${ctx.modelError.message}`;
      refuse(ctx, socket, new HttpError(503, 'model_not_loaded', why, null, { 'retry-after': '5' }));
      return;
    }
    const ticket = ctx.gate.enter();
    if (ticket === undefined) {
      refuse(
        ctx,
        socket,
        new HttpError(429, 'queue_full', `the server is busy: ${ctx.gate.maxConcurrent} sessions running and ${ctx.gate.maxQueue} queued; retry later`, null, {
          'retry-after': '1',
        }),
      );
      return;
    }
    let accepted = false;
    // A handshake that fails (or a socket gone before it completes) gives the ticket back.
    socket.once('close', () => {
      if (!accepted) ticket.release();
    });
    wsServer(ctx).handleUpgrade(req, socket, head, (ws) => {
      accepted = true;
      new RealtimeSession(ws, model, ticket, ctx);
    });
  },
};
