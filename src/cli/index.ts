// The rustasr command line: `rustasr infer <file|-> --model <dir> ...`, `devices`, `pull`, `list`, `synth`.
//
// Exit codes: 0 success, 1 runtime error (bad audio, missing model, unsupported device, ...), 2 bad usage
// (unknown or malformed flags, bad --config file, missing --model or file).
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import sade from 'sade';

import { DEFAULT_ALIGNER } from '../api/align.js';
import type { KernelName } from '../api/model.js';
import { recognize, type AudioInput } from '../api/recognize.js';
import type { RecognizeOptions } from '../api/transcriber.js';
import { RustAsrError } from '../errors.js';
import { resolveModel } from '../model/resolve.js';
import { notUtf8Hint, readRegularFile } from '../model/files.js';
import { checkContext } from '../text/prompt.js';
import type { SegmentResult } from '../stages/tokens.js';
import { FALLBACK_CUE_SECONDS, formatCue, segmentCues } from '../text/subtitles.js';
import { registerDevices } from './devices.js';
import { registerListen } from './listen.js';
import { DEFAULT_MODEL, EXIT_FAILURE, EXIT_USAGE, enumOpt, intOpt, numberOpt, stringOpt, UsageError } from './options.js';
import { registerModelCommands } from './models.js';
import { registerQueueCommands } from './queue.js';
import { registerServe } from './serve.js';
import { registerSynth } from './synth.js';

export { formatCue } from '../text/subtitles.js';
export { DEFAULT_MODEL, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError } from './options.js';

export const FORMATS = ['text', 'json', 'srt', 'vtt'] as const;
export type OutputFormat = (typeof FORMATS)[number];
const DEVICE_NAMES = ['auto', 'cpu', 'cuda', 'metal'] as const;
const KERNELS: readonly KernelName[] = ['auto', 'avx512bf16', 'avx512f', 'avx2', 'neon', 'scalar'];

/** Options of `rustasr infer`, as given by flags or by a --config JSON file (same names, camelCase). */
export interface InferOptions {
  model?: string;
  device?: (typeof DEVICE_NAMES)[number];
  deviceIndex?: number;
  language?: string;
  context?: string;
  format?: OutputFormat;
  maxNewTokens?: number;
  maxSegmentSeconds?: number;
  threads?: number;
  kernel?: KernelName;
  /** Decoder weight format: bf16 (default), int8, int4 (LoadModelOptions.quant). */
  quant?: 'bf16' | 'int8' | 'int4';
  /** Encoder / prefill arithmetic: f32 (default) or bf16 (LoadModelOptions.precision). */
  precision?: 'f32' | 'bf16';
  /** false: no early stop on runaway repetition (RecognizeOptions.repetitionGuard; default true). */
  repetitionGuard?: boolean;
  /** 'word': word times from the forced aligner (json: `words`; srt/vtt: cues from them). */
  timestamps?: 'none' | 'word';
  /** The forced aligner: a directory or hub id (default Qwen/Qwen3-ForcedAligner-0.6B). */
  aligner?: string;
  /** WebVTT: word-level (karaoke) timing inside each cue. */
  karaoke?: boolean;
}

const TIMESTAMPS = ['none', 'word'] as const;

/** Option name (camelCase, as in --config) -> flag name. */
const OPTION_FLAGS: Record<keyof InferOptions, string> = {
  model: 'model',
  device: 'device',
  deviceIndex: 'device-index',
  language: 'language',
  context: 'context',
  format: 'format',
  maxNewTokens: 'max-new-tokens',
  maxSegmentSeconds: 'max-segment-seconds',
  threads: 'threads',
  kernel: 'kernel',
  quant: 'quant',
  precision: 'precision',
  repetitionGuard: 'repetition-guard',
  timestamps: 'timestamps',
  aligner: 'aligner',
  karaoke: 'karaoke',
};

function boolOpt(name: string, v: unknown): boolean | undefined {
  if (v === undefined || typeof v === 'boolean') return v;
  throw new UsageError(`--${name} takes no value, got ${String(v)}`);
}

/** Validates raw option values (from flags or JSON) into InferOptions; throws UsageError. */
export function parseInferOptions(raw: Partial<Record<keyof InferOptions, unknown>>): InferOptions {
  const o: InferOptions = {
    model: stringOpt('model', raw.model),
    device: enumOpt('device', raw.device, DEVICE_NAMES),
    deviceIndex: intOpt('device-index', raw.deviceIndex, 0),
    language: stringOpt('language', raw.language),
    context: raw.context === undefined ? undefined : typeof raw.context === 'string' ? raw.context : stringOpt('context', raw.context),
    format: enumOpt('format', raw.format, FORMATS),
    maxNewTokens: intOpt('max-new-tokens', raw.maxNewTokens, 1),
    maxSegmentSeconds: numberOpt('max-segment-seconds', raw.maxSegmentSeconds),
    threads: intOpt('threads', raw.threads, 0),
    kernel: enumOpt('kernel', raw.kernel, KERNELS),
    quant: enumOpt('quant', raw.quant, ['bf16', 'int8', 'int4'] as const),
    precision: enumOpt('precision', raw.precision, ['f32', 'bf16'] as const),
    repetitionGuard: boolOpt('repetition-guard', raw.repetitionGuard),
    timestamps: enumOpt('timestamps', raw.timestamps, TIMESTAMPS),
    aligner: stringOpt('aligner', raw.aligner),
    karaoke: boolOpt('karaoke', raw.karaoke),
  };
  for (const k of Object.keys(o) as (keyof InferOptions)[]) if (o[k] === undefined) delete o[k];
  if (o.context !== undefined) {
    try {
      checkContext(o.context);
    } catch (err) {
      throw new UsageError(`--context: ${(err as Error).message}`);
    }
  }
  return o;
}

/** Largest --config file. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Reads a --config JSON file: an object whose keys are InferOptions names (camelCase) or flag names. */
export async function readConfig(path: string): Promise<Partial<Record<keyof InferOptions, unknown>>> {
  let text: string;
  try {
    // A regular file of at most 1 MiB (a FIFO or /dev/zero fails at once instead of blocking or filling memory).
    const bytes = await readRegularFile(path, {
      maxBytes: MAX_CONFIG_FILE_BYTES,
      label: '--config',
      tooLargeCode: 'INVALID_OPTION',
      missing: { code: 'INVALID_OPTION', message: `no such file${notUtf8Hint(path)}` },
    });
    text = (bytes as Buffer).toString('utf8');
  } catch (err) {
    throw new UsageError(`cannot read --config ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--config ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`--config ${path} must hold a JSON object`);
  const byFlag = new Map(Object.entries(OPTION_FLAGS).map(([k, f]) => [f, k as keyof InferOptions]));
  const out: Partial<Record<keyof InferOptions, unknown>> = {};
  for (const [key, value] of Object.entries(json)) {
    const name = (key in OPTION_FLAGS ? key : byFlag.get(key)) as keyof InferOptions | undefined;
    if (name === undefined) {
      throw new UsageError(`--config ${path}: unknown key ${JSON.stringify(key)} (known: ${Object.keys(OPTION_FLAGS).join(', ')})`);
    }
    out[name] = value;
  }
  return out;
}

/** What `infer` tells on stderr when subtitles get no word times (no aligner found). */
export function noAlignerMessage(aligner: string, why: string): string {
  return (
    `rustasr: no word timestamps (${why}); subtitle cues follow pauses instead (at most ${FALLBACK_CUE_SECONDS} s, ` +
    `times within a cue estimated).\n  For word-timed cues: rustasr pull ${aligner}, then --timestamps word` +
    (aligner === DEFAULT_ALIGNER ? '' : ` --aligner ${aligner}`) +
    '\n'
  );
}

/**
 * The aligner directory for `infer`, or undefined (with the reason) when none is available. Subtitles
 * without --timestamps use one only when it is already on disk (a directory, or in the cache); an explicit
 * --timestamps word resolves it (downloading a hub id).
 */
async function findAligner(o: InferOptions, explicit: boolean): Promise<{ dir?: string; why?: string }> {
  const ref = o.aligner ?? DEFAULT_ALIGNER;
  try {
    return { dir: await resolveModel(ref, explicit ? {} : { offline: true }) };
  } catch (err) {
    if (err instanceof RustAsrError && (err.code === 'MODEL_NOT_FOUND' || err.code === 'DOWNLOAD_FAILED')) {
      return { why: `${ref}: ${err.code === 'MODEL_NOT_FOUND' ? 'not found' : 'download failed'}` };
    }
    throw err;
  }
}

async function write(out: NodeJS.WritableStream, s: string): Promise<void> {
  if (s !== '' && !out.write(s)) await once(out as unknown as NodeJS.EventEmitter, 'drain');
}

export interface InferIo {
  stdin: Readable | NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

/** Runs `infer` with validated options. */
export async function runInfer(file: string, o: InferOptions, io: InferIo): Promise<void> {
  const format = o.format ?? 'text';
  const tty = io.stderr.isTTY === true;
  const input: AudioInput = file === '-' ? (io.stdin as NodeJS.ReadableStream) : file;
  const subtitles = format === 'srt' || format === 'vtt';
  // Word times: asked for, or for subtitles when an aligner is at hand; subtitles fall back to pause-based cues.
  let aligner: string | undefined;
  if (o.timestamps === 'word' || (subtitles && o.timestamps === undefined)) {
    const found = await findAligner(o, o.timestamps === 'word');
    if (found.dir !== undefined) aligner = found.dir;
    else if (subtitles) await write(io.stderr, noAlignerMessage(o.aligner ?? DEFAULT_ALIGNER, found.why!));
    else throw new RustAsrError('MODEL_NOT_FOUND', `--timestamps word needs a forced aligner (${found.why}); get one with: rustasr pull ${o.aligner ?? DEFAULT_ALIGNER}`);
  }
  const opts: RecognizeOptions = {
    model: o.model ?? DEFAULT_MODEL,
    device: o.device,
    deviceIndex: o.deviceIndex,
    threads: o.threads,
    kernel: o.kernel,
    quant: o.quant,
    precision: o.precision,
    repetitionGuard: o.repetitionGuard,
    language: o.language,
    context: o.context,
    maxNewTokens: o.maxNewTokens,
    // Without word times, subtitle cues are the segments: cut at pauses, at most 30 s.
    maxSegmentSeconds: subtitles && aligner === undefined ? Math.min(o.maxSegmentSeconds ?? Infinity, FALLBACK_CUE_SECONDS) : o.maxSegmentSeconds,
  };
  if (aligner !== undefined) {
    opts.timestamps = 'word';
    opts.aligner = aligner;
  }
  const stream = recognize(input, opts);
  // Output goes in segment order, each piece once its segment is done: the cleaned text (text), the cues
  // (srt/vtt), all at the end (json).
  const out: Promise<void>[] = [];
  let cueNo = 0;
  stream.on('segment', (seg: SegmentResult) => {
    if (tty) io.stderr.write(`[segment ${seg.index}: ${seg.start.toFixed(2)}-${seg.end.toFixed(2)} s, ${seg.tokens.length} tokens]\n`);
    if (format === 'text') out.push(write(io.stdout, seg.text));
    if (subtitles) out.push(write(io.stdout, segmentCues(seg).map((c) => formatCue(format, ++cueNo, c, o.karaoke === true)).join('')));
  });
  if (format === 'vtt') await write(io.stdout, 'WEBVTT\n\n');
  const tokens: number[] = [];
  for await (const tok of stream) tokens.push(tok.id);
  await Promise.all(out);
  const t = stream.timings;
  if (format === 'text') {
    await write(io.stdout, '\n');
  } else if (format === 'json') {
    const segments = stream.segments;
    const result: Record<string, unknown> = { text: segments.map((s) => s.text).join(''), language: stream.language ?? null, tokens, timings: t, segments };
    if (aligner !== undefined) result['words'] = segments.flatMap((s) => s.words ?? []);
    await write(io.stdout, JSON.stringify(result) + '\n');
  }
  if (tty) {
    const m = stream.loadedModel;
    const on = m === undefined ? '' : `on ${m.device}${m.deviceName === '' ? '' : ` (${m.deviceName})`}: `;
    io.stderr.write(
      on +
        `audio ${t.audioSeconds.toFixed(2)} s, total ${t.totalMs.toFixed(0)} ms (RTF ${t.rtf.toFixed(3)}): ` +
        `mel ${t.melMs.toFixed(0)} ms, encoder ${t.encoderMs.toFixed(0)} ms, prefill ${t.prefillMs.toFixed(0)} ms, ` +
        `decode ${t.decodeMs.toFixed(0)} ms\n`,
    );
  }
}

type Flags = Record<string, unknown> & { config?: unknown; _?: unknown };

/** mri (sade's parser) drops a lone '-'; it is passed through as this placeholder and mapped back. */
const STDIN_PLACEHOLDER = '\u0000stdin';

async function infer(file: string | undefined, flags: Flags): Promise<void> {
  if (file === STDIN_PLACEHOLDER) file = '-';
  if (file === undefined || file === '') throw new UsageError('infer needs a WAV file argument (or - for stdin)');
  let raw: Partial<Record<keyof InferOptions, unknown>> = {};
  if (flags.config !== undefined) {
    const path = stringOpt('config', flags.config)!;
    raw = await readConfig(path);
  }
  for (const [name, flag] of Object.entries(OPTION_FLAGS)) {
    if (flags[flag] !== undefined) raw[name as keyof InferOptions] = flags[flag];
  }
  await runInfer(String(file), parseInferOptions(raw), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
}


export async function main(argv: string[]): Promise<void> {
  const prog = sade('rustasr');
  prog.version('0.1.0');
  prog
    .command('infer [file]')
    .describe('Transcribe a WAV file (any rate, any channel count); - reads the WAV from stdin.')
    .option('--model, -m', `Model directory or Hugging Face repo id (default ${DEFAULT_MODEL}, downloaded once)`)
    .option('--device', 'auto | cpu | cuda | metal (default auto: CUDA, else Metal, else CPU; see `rustasr devices`)')
    .option('--device-index', 'Which GPU (CUDA device ordinal, default 0)')
    .option('--config', 'JSON file with the same options (camelCase or flag names); flags override it')
    .option('--language', 'Force the language (e.g. English); default: detect')
    .option('--context', 'Context text given to the decoder (glossary, names; at most 10,000 characters)')
    .option('--format', 'Output: text | json | srt | vtt (default text; srt/vtt: cues from word times when an aligner is found, else from pauses)')
    .option('--timestamps', 'none | word: word times from the forced aligner (json: "words"; default: word for srt/vtt when an aligner is on disk)')
    .option('--aligner', `Forced aligner directory or hub id (default ${DEFAULT_ALIGNER})`)
    .option('--karaoke', 'vtt: word-level timing inside each cue')
    .option('--max-new-tokens', 'Maximum number of generated tokens per segment (default 512)')
    .option('--max-segment-seconds', 'Longest segment decoded in one pass (default 1200)')
    .option('--threads', 'Number of CPU threads (default: all)')
    .option('--kernel', 'Force a CPU kernel: auto | avx512bf16 | avx512f | avx2 | neon | scalar (default auto)')
    .option('--quant', 'Decoder weights: bf16 (default) | int8 | int4 (quantised at load, cached)')
    .option('--precision', 'Encoder/prefill arithmetic: f32 (default, exact) | bf16 (faster on AVX512-BF16 CPUs)')
    .option('--repetition-guard', 'Stop runaway repetition early (default; --no-repetition-guard decodes up to --max-new-tokens)')
    .example('infer speech.wav --model ./Qwen3-ASR-0.6B')
    .example('infer - --model ./Qwen3-ASR-0.6B --format srt < speech.wav > speech.srt')
    .example('infer talk.wav --format vtt --timestamps word --karaoke > talk.vtt')
    .action(async (file: string | undefined, flags: Flags) => {
      try {
        await infer(file, flags);
      } catch (err) {
        const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
        process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
        process.exitCode = e.code === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_FAILURE;
      }
    });
  registerSynth(prog);
  registerListen(prog);
  registerModelCommands(prog);
  registerDevices(prog);
  registerServe(prog);
  registerQueueCommands(prog);
  // sade reports its own usage errors (unknown command or flag, missing argument) with exit code 1;
  // they are usage errors here (2). Its handlers run asynchronously and never call process.exit.
  const realExit = process.exit;
  process.exit = ((code?: number) => realExit.call(process, code === EXIT_FAILURE ? EXIT_USAGE : code)) as typeof process.exit;
  let ran: unknown;
  try {
    ran = prog.parse(
      argv.map((a, i) => (i >= 2 && a === '-' ? STDIN_PLACEHOLDER : a)),
      { unknown: (flag: string) => `Unknown option ${flag}`, boolean: ['karaoke'] },
    );
  } finally {
    process.exit = realExit;
  }
  await ran;
}
