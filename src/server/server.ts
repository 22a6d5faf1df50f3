// The HTTP server behind `rustasr serve`: node:http, dispatching on the route table (routes/index.ts).
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';

import { DEFAULT_ALIGNER, alignerFor, loadOptionsOf } from '../api/align.js';
import { loadModel, type LoadModelOptions, type Model } from '../api/model.js';
import { RustAsrError } from '../errors.js';
import { resolveModel } from '../hub/resolve.js';
import { bearerCheck } from './auth.js';
import type { HttpRoute, ServerContext, UpgradeRoute } from './context.js';
import { HttpError, refuseUpgrade, sendError, toHttpError } from './errors.js';
import { Gate } from './gate.js';
import { ServerMetrics } from './metrics.js';
import { HTTP_ROUTES, UPGRADE_ROUTES } from './routes/index.js';
import type { UploadLimits } from './upload.js';

export interface ServeOptions {
  /**
   * A loaded Model (used as it is, never disposed by the server), or a model directory / Hugging Face repo
   * id, loaded after the server starts listening (/readyz answers 503 until it is ready) and disposed at close.
   */
  model: Model | string;
  /** Load options when `model` is a name (device, quant, threads, ...); the aligner's too, except quant. */
  load?: LoadModelOptions;
  /**
   * The forced aligner behind word timestamps (verbose_json with `timestamp_granularities[]=word`) and
   * word-timed srt/vtt cues: a loaded forced-aligner Model (shared, never disposed by the server), or a
   * directory / hub id, loaded with the model (in BF16: `load` without `quant`; /readyz answers 503 until
   * both are ready) and disposed at close. Default: DEFAULT_ALIGNER ('Qwen/Qwen3-ForcedAligner-0.6B') when
   * it is already in the download cache (never downloaded), else none. `false`: none. Without an aligner,
   * word granularity gets 400 `word_timestamps_unavailable` and srt/vtt cue times are estimated.
   */
  aligner?: Model | string | false;
  /** The id listed by /v1/models and accepted in `model` fields (default: the directory's or repo's base name). */
  modelId?: string;
  /** Address to bind (default 127.0.0.1: loopback only). */
  host?: string;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
  /** Most tokens generated per segment (default: the SDK's 512); also caps a realtime session's tokens per step. */
  maxNewTokens?: number;
  /**
   * Stop a segment's decoding early once it is a runaway repetition the official clean-up removes anyway
   * (default true; the transcripts are the same). false decodes to maxNewTokens.
   */
  repetitionGuard?: boolean;
  /** Transcriptions and realtime sessions decoded at once (default 2). */
  maxConcurrent?: number;
  /** Admitted requests that may wait for a slot (uploading or queued) beyond maxConcurrent; more get 429 (default 16). */
  maxQueue?: number;
  /** Required as `Authorization: Bearer <key>` on every route but /healthz and /readyz (default: none). */
  apiKey?: string;
  /** Largest audio upload in MiB (default 25, OpenAI's limit). */
  maxUploadMb?: number;
  /** Uploads up to this many MiB stay in memory; larger ones go to a private temp directory (default 8). */
  memoryUploadMb?: number;
  /** Parent of the private upload directories (default os.tmpdir()). */
  tmpDir?: string;
  /** On close(): how long running transcriptions may take to finish before they are stopped (default 30 s). */
  drainTimeoutMs?: number;
}

const MIB = 1 << 20;

function positiveInt(name: string, v: number | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min) throw new RustAsrError('INVALID_OPTION', `${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

function positiveNumber(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new RustAsrError('INVALID_OPTION', `${name} must be a positive number, got ${String(v)}`);
  return v;
}

/** The default served id: the base name of a directory or repo id ('Qwen3-ASR-0.6B', 'tiny-a'). */
/** The aligner to load: a Model (shared), a name (loaded), or none (false; the default when not cached). */
async function alignerRef(ref: ServeOptions['aligner']): Promise<Model | string | undefined> {
  if (ref === false) return undefined;
  if (ref !== undefined) return ref;
  // As `rustasr infer` does for subtitles: the default aligner only when it is on disk already. It is optional:
  // a cache that cannot be read (missing, incomplete, unreadable) means none, not a server that fails to start.
  return resolveModel(DEFAULT_ALIGNER, { offline: true }).catch(() => undefined);
}

function defaultModelId(model: Model | string): string {
  const ref = typeof model === 'string' ? model : model.dir;
  return basename(ref.replace(/[\\/]+$/, '')) || ref;
}

/**
 * An OpenAI-compatible transcription server over one model. `listen()` binds it; `close()` drains it: no
 * new connections or sessions, running ones finish (up to drainTimeoutMs, then they are aborted), then the
 * model (when the server loaded it) is disposed.
 */
export class RustAsrServer {
  readonly http: Server;
  readonly gate: Gate;
  readonly metrics: ServerMetrics;
  /** Resolves with the model once it is loaded (rejects with its load error). */
  readonly ready: Promise<Model>;
  private loaded: Model | undefined;
  private loadedAligner: { model: Model; owns: boolean } | undefined;
  private loadError: Error | undefined;
  private created = 0;
  private isDraining = false;
  private closing: Promise<void> | undefined;
  private readonly shutdown = new AbortController();
  private readonly drain = new AbortController();
  private readonly ctx: ServerContext;
  private readonly checkKey: ((req: IncomingMessage) => void) | undefined;
  private readonly owned: boolean;
  private startLoad: (() => void) | undefined;

  constructor(
    private readonly opts: ServeOptions,
    private readonly routes: { http: readonly HttpRoute[]; upgrade: readonly UpgradeRoute[] } = { http: HTTP_ROUTES, upgrade: UPGRADE_ROUTES },
  ) {
    if (opts === null || typeof opts !== 'object') throw new RustAsrError('INVALID_OPTION', 'serve options must be an object');
    const isModel = typeof opts.model === 'object' && opts.model !== null && typeof (opts.model as Model).decode === 'function';
    if (!isModel && (typeof opts.model !== 'string' || opts.model === '')) {
      throw new RustAsrError('INVALID_OPTION', 'the model option must be a Model or a model directory / repo id');
    }
    const maxConcurrent = positiveInt('maxConcurrent', opts.maxConcurrent, 2);
    const maxQueue = positiveInt('maxQueue', opts.maxQueue, 16, 0);
    const upload: UploadLimits = {
      maxFileBytes: Math.floor(positiveNumber('maxUploadMb', opts.maxUploadMb, 25) * MIB),
      memoryBytes: Math.floor(positiveNumber('memoryUploadMb', opts.memoryUploadMb, 8) * MIB),
      tmpDir: opts.tmpDir,
    };
    const maxNewTokens = opts.maxNewTokens === undefined ? undefined : positiveInt('maxNewTokens', opts.maxNewTokens, 512);
    positiveInt('drainTimeoutMs', opts.drainTimeoutMs, 30_000, 0);
    if (opts.repetitionGuard !== undefined && typeof opts.repetitionGuard !== 'boolean') {
      throw new RustAsrError('INVALID_OPTION', 'repetitionGuard must be a boolean');
    }
    const aligner = opts.aligner;
    if (
      aligner !== undefined &&
      aligner !== false &&
      (typeof aligner === 'string' ? aligner === '' : aligner === null || typeof aligner !== 'object' || typeof (aligner as Model).createAligner !== 'function')
    ) {
      throw new RustAsrError('INVALID_OPTION', 'the aligner option must be a Model, a model directory / repo id, or false');
    }
    if (opts.apiKey !== undefined && (typeof opts.apiKey !== 'string' || opts.apiKey === '')) {
      throw new RustAsrError('INVALID_OPTION', 'apiKey must be a non-empty string');
    }
    this.checkKey = opts.apiKey === undefined ? undefined : bearerCheck(opts.apiKey);
    this.gate = new Gate(maxConcurrent, maxQueue);
    this.metrics = new ServerMetrics(this.gate);
    this.owned = !isModel;
    const modelId = opts.modelId ?? defaultModelId(opts.model);
    const aliases = typeof opts.model === 'string' ? [opts.model, resolve(opts.model)] : [opts.model.dir];
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.ctx = {
      get model() {
        return self.loaded;
      },
      get aligner() {
        return self.loaded === undefined ? undefined : self.loadedAligner?.model;
      },
      get modelError() {
        return self.loadError;
      },
      modelId,
      modelAliases: aliases.filter((a) => a !== modelId),
      get modelCreated() {
        return self.created;
      },
      gate: this.gate,
      metrics: this.metrics,
      upload,
      maxNewTokens,
      repetitionGuard: opts.repetitionGuard ?? true,
      get draining() {
        return self.isDraining;
      },
      drainSignal: this.drain.signal,
      shutdownSignal: this.shutdown.signal,
    };
    this.ready = new Promise<void>((res) => {
      this.startLoad = res;
    }).then(() => this.load(isModel));
    this.ready.catch((err: unknown) => {
      this.loadError = err instanceof Error ? err : new Error(String(err));
    });
    this.http = createHttpServer((req, res) => void this.dispatch(req, res));
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head));
    this.http.on('clientError', (_err, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /**
   * Loads the model and the aligner side by side; resolves with the model once both are ready. When either
   * fails, or the server closes first, whatever this server loaded is disposed.
   */
  private async load(isModel: boolean): Promise<Model> {
    const opts = this.opts;
    const asr = (async () => {
      const m = isModel ? (opts.model as Model) : await loadModel(opts.model as string, opts.load);
      await m.ready();
      return m;
    })();
    // The aligner runs in BF16 (its timestamps are classes with narrow margins; quant applies to the ASR model).
    const fa = alignerRef(opts.aligner).then((ref) =>
      ref === undefined ? undefined : alignerFor(ref, { ...loadOptionsOf(opts.load ?? {}), quant: undefined }),
    );
    const [m, a] = await Promise.allSettled([asr, fa]);
    if (m.status === 'rejected' || a.status === 'rejected' || this.isDraining) {
      if (m.status === 'fulfilled' && this.owned) m.value.dispose();
      if (a.status === 'fulfilled' && a.value?.owns) a.value.model.dispose();
      if (m.status === 'rejected') throw m.reason;
      if (a.status === 'rejected') throw a.reason;
      throw new RustAsrError('ABORTED', 'the server closed before the model was loaded');
    }
    const model = m.value;
    this.loadedAligner = a.value;
    this.loaded = model;
    this.created = Math.floor(Date.now() / 1000);
    return model;
  }

  /** The forced aligner in use once the server is ready (undefined without one, and before). */
  get aligner(): Model | undefined {
    return this.ctx.aligner;
  }

  /** What routes see (for tests and for routes added by embedders). */
  get context(): ServerContext {
    return this.ctx;
  }

  get draining(): boolean {
    return this.isDraining;
  }

  /** Binds host:port and starts loading the model (when given by name). Resolves once listening. */
  async listen(): Promise<AddressInfo> {
    const host = this.opts.host ?? '127.0.0.1';
    const port = this.opts.port ?? 8080;
    await new Promise<void>((resolveListen, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        resolveListen();
      });
    });
    this.startLoad?.();
    this.startLoad = undefined;
    return this.http.address() as AddressInfo;
  }

  /** http://host:port of the bound server. */
  get url(): string {
    const a = this.http.address() as AddressInfo | null;
    if (a === null) throw new RustAsrError('INVALID_ARGUMENT', 'the server is not listening');
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}`;
  }

  private findRoute(path: string, method: string): { route: HttpRoute; params: string[] } | HttpError {
    let wrongMethod: HttpRoute | undefined;
    for (const route of this.routes.http) {
      let params: string[] | undefined;
      if (typeof route.path === 'string') params = route.path === path ? [] : undefined;
      else {
        const m = route.path.exec(path);
        params = m === null ? undefined : m.slice(1);
      }
      if (params === undefined) continue;
      if (route.methods.includes(method)) return { route, params };
      wrongMethod ??= route;
    }
    if (wrongMethod) {
      return new HttpError(405, 'method_not_allowed', `${method} is not allowed on ${path}`, null, { allow: wrongMethod.methods.join(', ') });
    }
    return new HttpError(404, 'not_found', `no route ${method} ${path}`);
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const found = this.findRoute(path, req.method ?? 'GET');
    const label = found instanceof HttpError ? 'unknown' : found.route.name;
    let clientGone = false;
    res.once('close', () => {
      clientGone = !res.writableFinished;
      const status = res.writableFinished ? String(res.statusCode) : 'client_closed';
      this.metrics.requests.inc({ route: label, status });
      this.metrics.requestSeconds.observe({ route: label }, (performance.now() - t0) / 1000);
    });
    try {
      if (found instanceof HttpError) throw found;
      if (found.route.auth) this.checkKey?.(req);
      if (this.isDraining && !found.route.whileDraining) {
        throw new HttpError(503, 'shutting_down', 'the server is shutting down', null, { connection: 'close', 'retry-after': '1' });
      }
      await found.route.handle(req, res, this.ctx, found.params);
    } catch (err) {
      if (clientGone || res.destroyed) {
        this.metrics.errors.inc({ code: 'client_closed' });
        return;
      }
      const e = toHttpError(err);
      this.metrics.errors.inc({ code: e.code });
      if (res.headersSent) res.destroy();
      else sendError(res, e);
    }
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const route = this.routes.upgrade.find((r) => r.path === path);
    try {
      if (route === undefined) throw new HttpError(404, 'not_found', `no WebSocket route at ${path}`);
      if (route.auth) this.checkKey?.(req);
      if (this.isDraining) throw new HttpError(503, 'shutting_down', 'the server is shutting down');
    } catch (err) {
      const e = toHttpError(err);
      this.metrics.errors.inc({ code: e.code });
      this.metrics.requests.inc({ route: route?.name ?? 'unknown', status: String(e.status) });
      refuseUpgrade(socket, e);
      return;
    }
    route.upgrade(req, socket, head, this.ctx);
  }

  /**
   * Graceful shutdown: stops accepting connections, answers 503 to new requests on open keep-alive
   * connections, lets admitted transcriptions finish (aborting them after drainTimeoutMs), closes the
   * connections and disposes the model it loaded. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.isDraining = true;
    this.drain.abort(new RustAsrError('ABORTED', 'the server is shutting down'));
    const closed = new Promise<void>((res) => this.http.close(() => res()));
    this.http.closeIdleConnections();
    const timeout = this.opts.drainTimeoutMs ?? 30_000;
    const timer = setTimeout(() => this.shutdown.abort(new RustAsrError('ABORTED', 'drain timeout')), timeout);
    try {
      await this.gate.idle();
    } finally {
      clearTimeout(timer);
    }
    this.http.closeIdleConnections();
    // Responses still being written (non-session routes) get a moment; then every connection is closed.
    const grace = setTimeout(() => this.http.closeAllConnections(), 1000);
    await closed;
    clearTimeout(grace);
    this.startLoad = undefined;
    const m = this.loaded;
    const a = this.loadedAligner;
    this.loaded = undefined;
    this.loadedAligner = undefined;
    if (this.owned) m?.dispose();
    if (a?.owns) a.model.dispose();
  }
}

/** Creates a server (not yet listening): see RustAsrServer. */
export function createServer(opts: ServeOptions): RustAsrServer {
  return new RustAsrServer(opts);
}

/** Creates a server and starts it: it listens at once and loads the model in the background (see `ready`). */
export async function serve(opts: ServeOptions): Promise<RustAsrServer> {
  const server = new RustAsrServer(opts);
  await server.listen();
  return server;
}
