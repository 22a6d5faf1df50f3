// `rustasr worker` and `rustasr enqueue`: transcription jobs on a BullMQ queue with Redis as the broker
// (docs/server.md, "Workers on a queue"). Both print JSON lines on stdout.
import type { Sade } from 'sade';

import { DEVICES, type Device } from '../api/model.js';
import { RustAsrError } from '../errors.js';
import { DEFAULT_QUEUE } from '../queue/defaults.js';
import type { TranscriptionJob } from '../queue/jobs.js';
import { DEFAULT_MODEL, EXIT_FAILURE, EXIT_USAGE, UsageError, enumOpt, intOpt, maxThreads, numberOpt, stringOpt } from './common.js';

// Same values as in ./index.ts (not imported: index.ts imports this module).

type Flags = Record<string, unknown> & { _?: unknown[] };

const line = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');

function fail(err: unknown): void {
  const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
  process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
  process.exit(e.code === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_FAILURE);
}

function redisUrl(flags: Flags): string {
  const url = stringOpt('redis', flags['redis']) ?? (process.env['RUSTASR_REDIS_URL'] || undefined);
  if (url === undefined) throw new UsageError('--redis URL is required (or RUSTASR_REDIS_URL)');
  return url;
}

// The queue modules (and ioredis, ~0.3 s to import) are loaded only by these commands, not by every CLI start.
async function runWorker(flags: Flags): Promise<void> {
  const { TranscriptionWorker } = await import('../queue/worker.js');
  const lockSeconds = numberOpt('lock-seconds', flags['lock-seconds'], 1, 86400);
  const worker = await TranscriptionWorker.start({
    redis: redisUrl(flags),
    queue: stringOpt('queue', flags['queue']),
    model: stringOpt('model', flags['model']) ?? DEFAULT_MODEL,
    load: {
      device: enumOpt('device', flags['device'], DEVICES as readonly Device[]),
      quant: enumOpt('quant', flags['quant'], ['bf16', 'int8', 'int4'] as const),
      threads: intOpt('threads', flags['threads'], 0, maxThreads()),
    },
    concurrency: intOpt('concurrency', flags['concurrency'], 1, 1024),
    lockDurationMs: lockSeconds === undefined ? undefined : Math.round(lockSeconds * 1000),
    maxNewTokens: intOpt('max-new-tokens', flags['max-new-tokens'], 1, 32768),
    name: stringOpt('name', flags['name']),
  });
  worker.on('job', line);
  worker.on('error', (err: Error) => process.stderr.write(`rustasr worker: ${err.message}\n`));
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    worker.close().then(
      () => process.exit(0),
      () => process.exit(EXIT_FAILURE),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  line({ event: 'ready', worker: worker.name, pid: process.pid });
}

async function runEnqueue(first: string | undefined, flags: Flags): Promise<void> {
  const inputs = [first, ...(flags._ ?? [])].filter((x): x is string | number => x !== undefined && x !== '').map(String);
  if (inputs.length === 0) throw new UsageError('enqueue needs at least one input (a WAV path the workers can read, or an http(s) URL)');
  const id = stringOpt('id', flags['id']);
  if (id !== undefined && inputs.length > 1) throw new UsageError('--id names one job: give one input with it');
  const options = {
    language: stringOpt('language', flags['language']),
    context: typeof flags['context'] === 'string' ? flags['context'] : stringOpt('context', flags['context']),
    maxNewTokens: intOpt('max-new-tokens', flags['max-new-tokens'], 1, 32768),
  };
  for (const k of Object.keys(options) as (keyof typeof options)[]) if (options[k] === undefined) delete options[k];
  const timeout = numberOpt('timeout', flags['timeout'], 0.001, 86400 * 365);
  const jobs: TranscriptionJob[] = inputs.map((input) => ({ input, options, ...(id === undefined ? {} : { id }) }));
  const { enqueueTranscriptions } = await import('../queue/enqueue.js');
  const outcomes = await enqueueTranscriptions(redisUrl(flags), jobs, {
    queue: stringOpt('queue', flags['queue']),
    wait: flags['wait'] !== false,
    timeoutMs: timeout === undefined ? undefined : Math.round(timeout * 1000),
  });
  for (const o of outcomes) line(o);
  if (flags['wait'] !== false && outcomes.some((o) => o.state !== 'completed')) process.exitCode = EXIT_FAILURE;
}

/** Adds `worker` and `enqueue` to the rustasr CLI program. */
export function registerQueueCommands(prog: Sade): Sade {
  prog
    .command('worker')
    .describe('Take transcription jobs from a BullMQ queue (Redis broker) and write the results back; SIGTERM finishes the running job, then exits 0.')
    .option('--redis', 'Redis URL, redis://host:port (default $RUSTASR_REDIS_URL)')
    .option('--queue', `Queue name (default ${DEFAULT_QUEUE})`)
    .option('--model, -m', `Model directory or Hugging Face repo id (default ${DEFAULT_MODEL})`)
    .option('--device', 'auto | cpu | cuda | metal (default auto)')
    .option('--quant', 'Decoder weights: bf16 | int8 (default bf16)')
    .option('--threads', 'Number of CPU threads (default: all)')
    .option('--concurrency', 'Jobs run at once by this worker (default 1)')
    .option('--lock-seconds', 'Job lock time: a dead worker\'s job is taken over after it (default 30)')
    .option('--max-new-tokens', 'Maximum number of generated tokens per segment, when a job does not say (default 512)')
    .option('--name', 'Worker name stored on its jobs and results (default host:pid)')
    .example('worker --redis redis://127.0.0.1:6379 --model ./Qwen3-ASR-0.6B')
    .action((flags: Flags) => runWorker(flags).catch(fail));
  prog
    .command('enqueue [input]')
    .describe('Queue transcription jobs (WAV paths the workers can read, or http(s) URLs) and print each result as a JSON line.')
    .option('--redis', 'Redis URL, redis://host:port (default $RUSTASR_REDIS_URL)')
    .option('--queue', `Queue name (default ${DEFAULT_QUEUE})`)
    .option('--id', 'Job id (one input only; default: a hash of the input and options). A known id is not queued again')
    .option('--language', 'Force the language (e.g. English)')
    .option('--context', 'Context text given to the decoder')
    .option('--max-new-tokens', 'Maximum number of generated tokens per segment')
    .option('--wait', 'Wait for the results (--no-wait: print the queued ids and states)', true)
    .option('--timeout', 'Seconds to wait at most (unfinished jobs are printed with their state; exit 1)')
    .example('enqueue /data/a.wav /data/b.wav --redis redis://127.0.0.1:6379')
    .action((input: string | undefined, flags: Flags) => runEnqueue(input, flags).catch(fail));
  return prog;
}
