// A transcription worker on a BullMQ queue: takes jobs ({ input, options }), transcribes them with one
// loaded model, and writes each result back as the job's return value (in Redis, under the job id).
//
// Failure model (BullMQ's): a worker holds a lock on each job it runs and renews it every lockDuration/2.
// A worker that dies (crash, SIGKILL, lost machine) stops renewing; once the lock expires, another worker's
// stalled-job check moves the job back to the queue and it runs again there. A completion is only accepted
// from the lock holder, so a job is reported complete once. Bad input (not a WAV, unknown language, a
// missing file) fails the job at once; other errors are retried up to the job's `attempts`.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';

import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';

import { loadModel, type LoadModelOptions, type Model } from '../api/model.js';
import { transcribe } from '../api/transcribe.js';
import { RustAsrError, type RustAsrErrorCode } from '../errors.js';
import { DEFAULT_QUEUE, redisConnection, type TranscriptionJobData, type TranscriptionJobResult } from './jobs.js';

export interface WorkerOptions {
  /** redis:// or rediss:// URL of the broker. */
  redis: string;
  /** Queue name (default 'rustasr'). */
  queue?: string;
  /** A loaded Model (kept), or a directory / repo id (loaded by the worker, disposed at close). */
  model: Model | string;
  load?: LoadModelOptions;
  /** Jobs run at once by this worker (default 1). */
  concurrency?: number;
  /** Job lock time in ms: how long a dead worker's job waits before another worker takes it (default 30000). */
  lockDurationMs?: number;
  /** Most tokens per segment when a job does not say (default: the SDK's 512). */
  maxNewTokens?: number;
  /** Name stored on processed jobs and in results (default host:pid). */
  name?: string;
  /** Largest audio fetched from a URL input, in bytes (default 512 MiB). */
  maxInputBytes?: number;
}

/** Progress events ('job'): started, completed, failed. */
export interface WorkerJobEvent {
  event: 'started' | 'completed' | 'failed';
  id: string;
  /** 1 for the first run of the job; more after a worker died holding it, or a retried failure. */
  attempt: number;
  code?: string;
  message?: string;
}

/** Errors that come from the input itself: retrying cannot help. */
const INPUT_ERRORS: ReadonlySet<RustAsrErrorCode> = new Set([
  'INVALID_WAV',
  'UNSUPPORTED_WAV_FORMAT',
  'UNSUPPORTED_AUDIO_FORMAT',
  'INVALID_AUDIO',
  'TRUNCATED_WAV',
  'EMPTY_AUDIO',
  'AUDIO_TOO_SHORT',
  'UNSUPPORTED_LANGUAGE',
  'INVALID_OPTION',
  'INVALID_ARGUMENT',
  'IO_ERROR',
]);

async function fetchInput(url: string, maxBytes: number, signal: AbortSignal | undefined): Promise<Buffer> {
  let res: Response;
  try {
    res = await fetch(url, { signal });
  } catch (err) {
    throw new RustAsrError('DOWNLOAD_FAILED', `cannot fetch ${url}: ${(err as Error).message}`, { cause: err });
  }
  if (!res.ok || res.body === null) throw new RustAsrError('DOWNLOAD_FAILED', `cannot fetch ${url}: HTTP ${res.status}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > maxBytes) throw new UnrecoverableError(`INVALID_OPTION: ${url} is larger than ${maxBytes} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks, size);
}

/**
 * A running worker. Emits 'job' (WorkerJobEvent) and 'error' (connection and internal errors, which BullMQ
 * retries by itself). close() lets running jobs finish, then disconnects and disposes the model it loaded.
 */
export class TranscriptionWorker extends EventEmitter {
  private closing: Promise<void> | undefined;

  private constructor(
    readonly bull: Worker<TranscriptionJobData, TranscriptionJobResult>,
    readonly model: Model,
    readonly name: string,
    private readonly conn: Redis,
    private readonly ownsModel: boolean,
  ) {
    super();
  }

  /** Loads the model (when named), connects, and starts taking jobs. */
  static async start(opts: WorkerOptions): Promise<TranscriptionWorker> {
    const concurrency = opts.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RustAsrError('INVALID_OPTION', `concurrency must be a positive integer, got ${String(concurrency)}`);
    const lockDuration = opts.lockDurationMs ?? 30_000;
    if (!Number.isInteger(lockDuration) || lockDuration < 1000) throw new RustAsrError('INVALID_OPTION', `lockDurationMs must be an integer >= 1000, got ${String(lockDuration)}`);
    const maxInputBytes = opts.maxInputBytes ?? 512 << 20;
    const conn = redisConnection(opts.redis);
    let model: Model;
    const owns = typeof opts.model === 'string';
    try {
      model = typeof opts.model === 'string' ? await loadModel(opts.model, opts.load) : opts.model;
      await model.ready();
    } catch (err) {
      conn.disconnect();
      throw err;
    }
    const name = opts.name ?? `${hostname()}:${process.pid}`;
    // The worker object is made after the processor it runs; the processor reaches it through here.
    const holder: { w?: TranscriptionWorker } = {};
    const processor = async (job: Job<TranscriptionJobData, TranscriptionJobResult>, _token?: string, signal?: AbortSignal): Promise<TranscriptionJobResult> => {
      const id = String(job.id);
      const attempt = job.attemptsStarted;
      holder.w?.emit('job', { event: 'started', id, attempt } satisfies WorkerJobEvent);
      const { input, options = {} } = job.data;
      try {
        const audio = /^https?:\/\//i.test(input) ? await fetchInput(input, maxInputBytes, signal) : input;
        const r = await transcribe(audio, {
          model,
          language: options.language,
          context: options.context,
          maxNewTokens: options.maxNewTokens ?? opts.maxNewTokens,
          maxSegmentSeconds: options.maxSegmentSeconds,
          signal,
        });
        return { id, input, text: r.text, language: r.language ?? null, tokens: r.tokens, segments: r.segments, timings: r.timings, worker: name };
      } catch (err) {
        // The failure reason starts with the error code ('INVALID_WAV: ...'), as results are read across machines.
        if (err instanceof RustAsrError && INPUT_ERRORS.has(err.code)) throw new UnrecoverableError(`${err.code}: ${err.message}`);
        if (err instanceof RustAsrError) throw new Error(`${err.code}: ${err.message}`, { cause: err });
        throw err;
      }
    };
    const bull = new Worker<TranscriptionJobData, TranscriptionJobResult>(opts.queue ?? DEFAULT_QUEUE, processor, {
      connection: conn,
      concurrency,
      lockDuration,
      stalledInterval: lockDuration,
      maxStalledCount: 2,
      name,
      autorun: false,
    });
    const w = new TranscriptionWorker(bull, model, name, conn, owns);
    holder.w = w;
    bull.on('completed', (job) => w.emit('job', { event: 'completed', id: String(job.id), attempt: job.attemptsStarted } satisfies WorkerJobEvent));
    bull.on('failed', (job, err) => {
      if (job === undefined) return;
      const code = /^([A-Z_]+): /.exec(err.message)?.[1] ?? 'INTERNAL';
      w.emit('job', { event: 'failed', id: String(job.id), attempt: job.attemptsStarted, code, message: err.message } satisfies WorkerJobEvent);
    });
    bull.on('error', (err) => {
      if (w.listenerCount('error') > 0) w.emit('error', err);
    });
    void bull.run().catch((err: unknown) => {
      if (w.listenerCount('error') > 0) w.emit('error', err);
    });
    await bull.waitUntilReady();
    return w;
  }

  /** Stops taking jobs, waits for the running ones, disconnects, and disposes the model it loaded. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.bull.close();
      this.conn.disconnect();
      if (this.ownsModel) this.model.dispose();
    })();
    return this.closing;
  }
}

/** Starts a worker: see TranscriptionWorker. */
export function startWorker(opts: WorkerOptions): Promise<TranscriptionWorker> {
  return TranscriptionWorker.start(opts);
}
