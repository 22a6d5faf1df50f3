// Submitting transcription jobs to the queue and waiting for their results.
import { Job, Queue } from 'bullmq';

import { abortError } from '../core/abort.js';
import { RustAsrError } from '../errors.js';
import { DEFAULT_QUEUE, checkJob, jobIdOf, redisConnection, type TranscriptionJob, type TranscriptionJobData, type TranscriptionJobResult } from './jobs.js';

export interface EnqueueOptions {
  /** Queue name (default 'rustasr'). */
  queue?: string;
  /** Wait for the results (default true); false returns once the jobs are queued. */
  wait?: boolean;
  /** Give up waiting after this many ms (unfinished jobs are returned with their state; default: no limit). */
  timeoutMs?: number;
  /** Runs of a job that fails with a transient error (default 3; bad input fails at once). */
  attempts?: number;
  /** How long finished jobs and their results are kept in Redis, in seconds (default 7 days). */
  keepSeconds?: number;
  /** How often unfinished jobs are checked, in ms (default 200). */
  pollMs?: number;
  signal?: AbortSignal;
}

/** What became of one job. */
export interface JobOutcome {
  id: string;
  /** 'completed', 'failed', or (not waited for / timed out) 'waiting', 'active', 'delayed', ... */
  state: string;
  result?: TranscriptionJobResult;
  /** The failure reason ('INVALID_WAV: not a WAV file ...') when state is 'failed'. */
  error?: string;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(abortError(signal?.reason));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/**
 * Queues `jobs` and (by default) waits for each to finish, returning the outcomes in the order given.
 * Idempotent by job id: a job whose id is already queued, running or finished (within keepSeconds) is not
 * queued again: its existing run and result are returned. Ids default to a hash of input and options.
 */
export async function enqueueTranscriptions(redisUrl: string, jobs: readonly TranscriptionJob[], opts: EnqueueOptions = {}): Promise<JobOutcome[]> {
  if (!Array.isArray(jobs)) throw new RustAsrError('INVALID_OPTION', 'jobs must be an array');
  for (const j of jobs) checkJob(j);
  const ids = jobs.map(jobIdOf);
  const attempts = opts.attempts ?? 3;
  const keep = opts.keepSeconds ?? 7 * 86_400;
  const conn = redisConnection(redisUrl);
  const queue = new Queue<TranscriptionJobData, TranscriptionJobResult>(opts.queue ?? DEFAULT_QUEUE, { connection: conn });
  queue.on('error', () => {}); // connection errors: commands wait for the reconnect
  try {
    await queue.addBulk(
      jobs.map((j, i) => ({
        name: 'transcribe',
        data: { input: j.input, ...(j.options === undefined ? {} : { options: j.options }) },
        opts: {
          jobId: ids[i],
          attempts,
          backoff: { type: 'exponential', delay: 1000 },
          removeOnComplete: { age: keep },
          removeOnFail: { age: keep },
        },
      })),
    );
    const outcomes = new Map<string, JobOutcome>();
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    for (;;) {
      for (const id of ids) {
        if (outcomes.get(id)?.state === 'completed' || outcomes.get(id)?.state === 'failed') continue;
        const state = await queue.getJobState(id);
        if (state === 'completed' || state === 'failed') {
          const job = await Job.fromId<TranscriptionJobData, TranscriptionJobResult>(queue, id);
          if (job === undefined) {
            outcomes.set(id, { id, state: 'unknown' });
            continue;
          }
          outcomes.set(id, state === 'completed' ? { id, state, result: job.returnvalue } : { id, state, error: job.failedReason });
        } else {
          outcomes.set(id, { id, state });
        }
      }
      const done = ids.every((id) => ['completed', 'failed', 'unknown'].includes(outcomes.get(id)?.state ?? ''));
      if (done || opts.wait === false || Date.now() >= deadline) break;
      await sleep(opts.pollMs ?? 200, opts.signal);
    }
    return ids.map((id) => outcomes.get(id) ?? { id, state: 'unknown' });
  } finally {
    await queue.close();
    conn.disconnect();
  }
}
