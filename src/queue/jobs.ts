// Transcription jobs on a BullMQ queue (Redis as the broker): their data, results and job ids.
import { createHash } from 'node:crypto';

import { Redis } from 'ioredis';

import type { Timings } from '../api/model.js';
import { checkMaxNewTokens } from '../core/options.js';
import { RustAsrError } from '../errors.js';
import type { SegmentResult } from '../stages/tokens.js';

export { DEFAULT_QUEUE } from './defaults.js';

/** Per-job decoding options (the transcribe() options that make sense across machines). */
export interface TranscriptionJobOptions {
  language?: string;
  context?: string;
  maxNewTokens?: number;
  maxSegmentSeconds?: number;
}

/** What a job carries: the audio (a path the workers can read, or an http(s) URL) and its options. */
export interface TranscriptionJobData {
  input: string;
  options?: TranscriptionJobOptions;
}

/** What a worker writes back (the job's return value in Redis). */
export interface TranscriptionJobResult {
  /** The job id. */
  id: string;
  input: string;
  text: string;
  language: string | null;
  tokens: number[];
  segments: SegmentResult[];
  timings: Timings;
  /** The worker that produced it (its --name, default host:pid). */
  worker: string;
}

/** One job to submit; `id` defaults to a hash of input and options (the same audio and options: the same job). */
export interface TranscriptionJob extends TranscriptionJobData {
  id?: string;
}

/**
 * The job id: the given one (checked: BullMQ ids may not be integers or contain ':'), else 'tx-' and the
 * first 32 hex digits of the SHA-256 of the input and options.
 */
export function jobIdOf(job: TranscriptionJob): string {
  if (job.id !== undefined) {
    if (typeof job.id !== 'string' || job.id === '' || job.id.includes(':') || /^\d+$/.test(job.id)) {
      throw new RustAsrError('INVALID_OPTION', `job id must be a non-empty string that is not an integer and has no ':', got ${JSON.stringify(job.id)}`);
    }
    return job.id;
  }
  const o = job.options ?? {};
  const key = JSON.stringify([job.input, o.language ?? null, o.context ?? null, o.maxNewTokens ?? null, o.maxSegmentSeconds ?? null]);
  return 'tx-' + createHash('sha256').update(key).digest('hex').slice(0, 32);
}

/** Checks a job before it is queued (INVALID_OPTION). */
export function checkJob(job: TranscriptionJob): void {
  if (job === null || typeof job !== 'object' || typeof job.input !== 'string' || job.input === '') {
    throw new RustAsrError('INVALID_OPTION', 'a job needs an input: a file path or an http(s) URL');
  }
  const o = job.options;
  if (o === undefined) return;
  if (typeof o !== 'object' || o === null) throw new RustAsrError('INVALID_OPTION', 'job options must be an object');
  checkMaxNewTokens(o.maxNewTokens);
}

/**
 * A Redis connection for BullMQ from a redis:// or rediss:// URL. maxRetriesPerRequest null: commands wait
 * for a reconnect instead of failing (what BullMQ workers require), so a Redis restart only delays work.
 */
export function redisConnection(url: string): Redis {
  if (typeof url !== 'string' || !/^rediss?:\/\//.test(url)) {
    throw new RustAsrError('INVALID_OPTION', `the Redis URL must start with redis:// or rediss://, got ${JSON.stringify(url)}`);
  }
  const conn = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: (times) => Math.min(100 * times, 2000) });
  conn.on('error', () => {}); // reconnects are automatic; errors surface from the commands that need them
  return conn;
}
