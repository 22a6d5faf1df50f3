// `rustasr listen [file|-]`: live recognition from a file or stdin (e.g. `arecord ... | rustasr listen -`).
//
// Output: on a terminal the segment's unstable tail is rewritten in place and each final gets its own line;
// otherwise JSON lines of events (--format jsonl, the default off a terminal) or the finals as text lines
// (--format text).
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sade } from 'sade';

import { listen, type ListenOptions, type LiveEvent } from '../api/listen.js';
import { decodeWav } from '../audio/wav.js';
import { LIVE_DEFAULTS } from '../core/live.js';
import type { KernelName } from '../core/model.js';
import { RustAsrError } from '../errors.js';
import type { AudioChunk } from '../stages/wav-decode.js';
import { DEFAULT_MODEL, enumOpt, intOpt, maxThreads, numberOpt, report, stringOpt, UsageError } from './common.js';

const LISTEN_FORMATS = ['tty', 'jsonl', 'text'] as const;
type ListenFormat = (typeof LISTEN_FORMATS)[number];
const DEVICE_NAMES = ['auto', 'cpu', 'cuda', 'metal'] as const;
const KERNELS: readonly KernelName[] = ['auto', 'avx512bf16', 'avx512f', 'avx2', 'neon', 'scalar'];
const QUANTS = ['bf16', 'int8', 'int4'] as const;

export interface ListenIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream;
}

/** The audio of a WAV file as 100 ms chunks delivered at real time (a simulated microphone). */
async function* paced(path: string): AsyncGenerator<AudioChunk> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new RustAsrError('IO_ERROR', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const { info, samples } = decodeWav(bytes);
  const step = Math.max(1, Math.round(info.sampleRate / 10));
  const t0 = performance.now();
  for (let i = 0; i < samples.length; i += step) {
    const due = t0 + ((i + step) / info.sampleRate) * 1000;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    yield { samples: samples.slice(i, i + step), sampleRate: info.sampleRate };
  }
}

async function write(out: NodeJS.WritableStream, s: string): Promise<void> {
  if (s !== '' && !out.write(s)) await once(out as unknown as NodeJS.EventEmitter, 'drain');
}

/** Runs `listen` with validated options. */
export async function runListen(file: string, opts: ListenOptions & { realtime?: boolean; format?: ListenFormat }, io: ListenIo): Promise<void> {
  const format: ListenFormat = opts.format ?? (io.stdout.isTTY ? 'tty' : 'jsonl');
  let source: Readable | string;
  if (file === '-') source = io.stdin instanceof Readable ? io.stdin : new Readable().wrap(io.stdin);
  else if (opts.realtime) source = Readable.from(paced(file), { objectMode: true });
  else source = file;
  const { realtime: _r, format: _f, ...listenOpts } = opts;
  void _r;
  void _f;
  const stream = listen(source, listenOpts);
  const width = Math.max(20, (io.stdout.columns ?? 80) - 1);
  let shown = false;
  for await (const raw of stream) {
    const e = raw as LiveEvent;
    if (format === 'jsonl') {
      await write(io.stdout, JSON.stringify(e) + '\n');
    } else if (format === 'text') {
      if (e.type === 'final' && e.text !== '') await write(io.stdout, e.text + '\n');
    } else if (e.type === 'partial') {
      // The line shows the segment's hypothesis: stable text plain, the unstable tail dim; only what fits.
      const full = e.stable + e.unstable;
      const cut = Math.max(0, full.length - width);
      const stable = e.stable.slice(Math.min(cut, e.stable.length));
      const unstable = e.unstable.slice(Math.max(0, cut - e.stable.length));
      await write(io.stdout, `\r\x1b[K${stable}\x1b[2m${unstable}\x1b[22m`);
      shown = true;
    } else {
      await write(io.stdout, `\r\x1b[K${e.text}\n`);
      shown = false;
    }
  }
  if (shown) await write(io.stdout, '\n');
}

type Flags = Record<string, unknown>;

function boolFlag(name: string, v: unknown): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'boolean') return v;
  throw new UsageError(`--${name} takes no value`);
}

/** Validates the flags of `listen`. */
export function parseListenFlags(flags: Flags): ListenOptions & { realtime?: boolean; format?: ListenFormat } {
  const endpoint = boolFlag('endpoint', flags['endpoint']); // --no-endpoint gives false
  const o: ListenOptions & { realtime?: boolean; format?: ListenFormat } = {
    model: stringOpt('model', flags['model']) ?? DEFAULT_MODEL,
    device: enumOpt('device', flags['device'], DEVICE_NAMES),
    deviceIndex: intOpt('device-index', flags['device-index'], 0, 255),
    threads: intOpt('threads', flags['threads'], 0, maxThreads()),
    kernel: enumOpt('kernel', flags['kernel'], KERNELS),
    quant: enumOpt('quant', flags['quant'], QUANTS),
    language: stringOpt('language', flags['language']),
    context: stringOpt('context', flags['context']),
    exact: boolFlag('exact', flags['exact']),
    endpoint,
    chunkSeconds: numberOpt('chunk-seconds', flags['chunk-seconds'], 0.1, 60),
    maxNewTokens: intOpt('max-new-tokens', flags['max-new-tokens'], 1, 32768),
    maxSegmentSeconds: numberOpt('max-segment-seconds', flags['max-segment-seconds'], 1, 1200),
    minSilenceMs: numberOpt('min-silence-ms', flags['min-silence-ms'], 10, 60000),
    thresholdDb: flags['threshold-db'] === undefined ? undefined : Number(flags['threshold-db']),
    pastText: boolFlag('past-text', flags['past-text']),
    realtime: boolFlag('realtime', flags['realtime']),
    format: enumOpt('format', flags['format'], LISTEN_FORMATS),
  };
  if (o.thresholdDb !== undefined && !Number.isFinite(o.thresholdDb)) throw new UsageError(`--threshold-db must be a number, got ${String(flags['threshold-db'])}`);
  for (const k of Object.keys(o) as (keyof typeof o)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** Flags of `listen` that take a value (a negative number after one is its value: see joinNegativeValues). */
export const LISTEN_VALUE_FLAGS = ['--chunk-seconds', '--min-silence-ms', '--threshold-db', '--max-segment-seconds', '--max-new-tokens', '--quant'];

/** mri (sade's parser) drops a lone '-'; index.ts passes it through as this placeholder. */
const STDIN_PLACEHOLDER = '\u0000stdin';

export function registerListen(prog: Sade): void {
  prog
    .command('listen [file]')
    .describe('Live recognition: partial results while the audio arrives, a final line per segment; - reads a WAV stream from stdin.')
    .option('--model, -m', 'Model directory or Hugging Face repo id (default Qwen/Qwen3-ASR-0.6B)')
    .option('--device', 'auto | cpu | cuda | metal')
    .option('--device-index', 'Which GPU (CUDA device ordinal)')
    .option('--quant', 'bf16 | int8 | int4 (decoder weights; int8 is faster and smaller, int4 CPU only)')
    .option('--threads', 'Number of CPU threads (default: all)')
    .option('--kernel', 'Force a CPU kernel')
    .option('--language', 'Force the language (e.g. English); default: detect')
    .option('--context', 'Context text given to the decoder')
    .option('--realtime', 'Pace a file at real time (simulates a microphone)')
    .option('--format', 'tty | jsonl | text (default: tty on a terminal, else jsonl; text = finals only)')
    .option('--exact', 'The official streaming algorithm (re-runs all audio every chunk)')
    .option('--chunk-seconds', `Audio per step (default ${LIVE_DEFAULTS.chunkSeconds})`)
    .option('--max-new-tokens', `Tokens per step (default ${LIVE_DEFAULTS.maxNewTokens})`)
    .option('--endpoint', 'Segment at pauses and at the longest segment (default on; --no-endpoint: one segment for the whole stream)')
    .option('--min-silence-ms', 'Pause that ends a segment (default 600)')
    .option('--max-segment-seconds', `Longest segment (default ${LIVE_DEFAULTS.maxSegmentSeconds})`)
    .option('--threshold-db', 'Absolute speech level in dBFS (default -50)')
    .option('--past-text', "Give the previous segment's text to the next as context")
    .example('listen talk.wav --model ./Qwen3-ASR-0.6B --realtime')
    .example('listen - --model ./Qwen3-ASR-0.6B < <(arecord -f S16_LE -r 16000 -c 1 -t wav -)')
    .action(async (file: string | undefined, flags: Flags) => {
      try {
        if (file === STDIN_PLACEHOLDER) file = '-';
        if (file === undefined || file === '') throw new UsageError('listen needs a WAV file argument (or - for stdin)');
        const opts = parseListenFlags(flags);
        if (opts.realtime && file === '-') throw new UsageError('--realtime paces a file; stdin is read as it arrives');
        process.stdout.on('error', (err: NodeJS.ErrnoException) => {
          if (err.code === 'EPIPE') process.exit(0);
        });
        await runListen(file, opts, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      } catch (err) {
        report(err);
      }
    });
}
