// `rustasr infer <file...|->`: transcribe audio files (any supported format) or stdin.
//
// Several files are transcribed one after another with one loaded model: in text output each under a
// `==> file <==` header, in JSON output one object per line (JSON lines), with --output-dir one output file
// per input. A file that fails is reported and the others still run; the exit code is then 1.
import { rename, writeFile, mkdir } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Sade } from 'sade';

import type { KernelName, Model } from '../api/model.js';
import { loadModel } from '../api/model.js';
import { recognize, type AudioInput } from '../api/recognize.js';
import type { RecognizeOptions } from '../api/transcriber.js';
import { DEFAULT_ALIGNER } from '../api/align.js';
import { isAbortError } from '../core/abort.js';
import { RAW_ENCODINGS, type RawAudioFormat, type RawEncoding } from '../audio/open.js';
import { MAX_WAV_SAMPLE_RATE } from '../audio/wav-format.js';
import { RustAsrError } from '../errors.js';
import { FILE_LIMITS, notUtf8Hint, readRegularFile } from '../hub/files.js';
import { resolveModel } from '../hub/resolve.js';
import { MAX_SEGMENT_SECONDS } from '../stages/segment.js';
import type { SegmentResult } from '../stages/tokens.js';
import { checkContext, findLanguage, normalizeLanguage, SUPPORTED_LANGUAGES } from '../text/prompt.js';
import { FALLBACK_CUE_SECONDS, formatCue, segmentCues } from '../text/subtitles.js';
import {
  DEFAULT_MODEL,
  EXIT_EPIPE,
  EXIT_FAILURE,
  EXIT_OK,
  EXIT_USAGE,
  enumOpt,
  exitCodeOf,
  intOpt,
  maxThreads,
  numberOpt,
  stringOpt,
  usage,
  UsageError,
  watchEpipe,
} from './common.js';
import { downloadLine, terminal, transcribeLine, type Terminal } from './progress.js';

export const FORMATS = ['text', 'json', 'srt', 'vtt'] as const;
export type OutputFormat = (typeof FORMATS)[number];
const DEVICE_NAMES = ['auto', 'cpu', 'cuda', 'metal'] as const;
const KERNELS: readonly KernelName[] = ['auto', 'avx512bf16', 'avx512f', 'avx2', 'neon', 'scalar'];
const QUANTS = ['bf16', 'int8', 'int4'] as const;
const PRECISIONS = ['f32', 'bf16'] as const;
/** Upper bound of --max-new-tokens (a segment's transcript is far shorter; this only stops typos). */
export const MAX_NEW_TOKENS_LIMIT = 32_768;
/** Upper bound of --device-index. */
const MAX_DEVICE_INDEX = 255;

const TIMESTAMPS = ['none', 'word'] as const;

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
  quant?: (typeof QUANTS)[number];
  /** Encoder / prefill arithmetic: f32 (default) or bf16 (LoadModelOptions.precision). */
  precision?: (typeof PRECISIONS)[number];
  /** false: no early stop on runaway repetition (RecognizeOptions.repetitionGuard; default true). */
  repetitionGuard?: boolean;
  /** Write one output file per input into this directory instead of stdout. */
  outputDir?: string;
  /** No progress, no segment lines, no summary on stderr. */
  quiet?: boolean;
  /** Headerless PCM input: --raw with --rate, --channels, --encoding. */
  raw?: RawAudioFormat;
  /** 'word': word times from the forced aligner (json: `words`; srt/vtt: cues from them). */
  timestamps?: 'none' | 'word';
  /** The forced aligner: a directory or hub id (default Qwen/Qwen3-ForcedAligner-0.6B). */
  aligner?: string;
  /** WebVTT: word-level (karaoke) timing inside each cue. */
  karaoke?: boolean;
}

/** Option name (camelCase, as in --config) -> flag name. */
export const OPTION_FLAGS: Record<Exclude<keyof InferOptions, 'raw'>, string> = {
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
  outputDir: 'output-dir',
  quiet: 'quiet',
  timestamps: 'timestamps',
  aligner: 'aligner',
  karaoke: 'karaoke',
};

/** Flags that take a value (for joining negative numbers to them; see joinNegativeValues). */
export const INFER_VALUE_FLAGS = [
  '--model',
  '-m',
  '--device',
  '--device-index',
  '--config',
  '--language',
  '--context',
  '--format',
  '--max-new-tokens',
  '--max-segment-seconds',
  '--threads',
  '--kernel',
  '--quant',
  '--precision',
  '--output-dir',
  '--rate',
  '--channels',
  '--encoding',
  '--timestamps',
  '--aligner',
];

/** Checks a --language value against the languages Qwen3-ASR names (and their ISO codes) before any load. */
export function checkLanguageFlag(value: string): string {
  try {
    return normalizeLanguage(value);
  } catch {
    throw new UsageError(
      `--language ${JSON.stringify(value)} is not a supported language; use a name or an ISO 639-1/639-3 code of: ` +
        SUPPORTED_LANGUAGES.join(', '),
    );
  }
}

type RawOptions = Partial<Record<Exclude<keyof InferOptions, 'raw'>, unknown>> & { raw?: unknown; rate?: unknown; channels?: unknown; encoding?: unknown };

function boolOpt(name: string, v: unknown): boolean | undefined {
  if (v === undefined || typeof v === 'boolean') return v;
  if (v === 'true') return true;
  if (v === 'false') return false;
  return usage(`--${name} takes no value, got ${String(v)}`);
}

/** Validates raw option values (from flags or JSON) into InferOptions; throws UsageError (exit code 2). */
export function parseInferOptions(raw: RawOptions): InferOptions {
  const threadsMax = maxThreads();
  const language = stringOpt('language', raw.language);
  const o: InferOptions = {
    model: stringOpt('model', raw.model),
    device: enumOpt('device', raw.device, DEVICE_NAMES),
    deviceIndex: intOpt('device-index', raw.deviceIndex, 0, MAX_DEVICE_INDEX),
    language: language === undefined ? undefined : checkLanguageFlag(language),
    context: raw.context === undefined ? undefined : typeof raw.context === 'string' ? raw.context : stringOpt('context', raw.context),
    format: enumOpt('format', raw.format, FORMATS),
    maxNewTokens: intOpt('max-new-tokens', raw.maxNewTokens, 1, MAX_NEW_TOKENS_LIMIT),
    maxSegmentSeconds: numberOpt('max-segment-seconds', raw.maxSegmentSeconds, 1, MAX_SEGMENT_SECONDS),
    threads: intOpt('threads', raw.threads, 0, threadsMax, ` (0: all ${threadsMax} hardware threads)`),
    kernel: enumOpt('kernel', raw.kernel, KERNELS),
    quant: enumOpt('quant', raw.quant, QUANTS),
    precision: enumOpt('precision', raw.precision, PRECISIONS),
    repetitionGuard: boolOpt('repetition-guard', raw.repetitionGuard),
    outputDir: stringOpt('output-dir', raw.outputDir),
    quiet: boolOpt('quiet', raw.quiet),
    timestamps: enumOpt('timestamps', raw.timestamps, TIMESTAMPS),
    aligner: stringOpt('aligner', raw.aligner),
    karaoke: boolOpt('karaoke', raw.karaoke),
  };
  if (o.context !== undefined) {
    try {
      checkContext(o.context);
    } catch (err) {
      throw new UsageError(`--context: ${(err as Error).message}`);
    }
  }
  const rawFlag = raw.raw === true || raw.raw === 'true';
  if (raw.raw !== undefined && raw.raw !== true && raw.raw !== false && raw.raw !== 'true' && raw.raw !== 'false') usage('--raw takes no value (give --rate, --channels, --encoding)');
  if (rawFlag) {
    const sampleRate = intOpt('rate', raw.rate, 1, MAX_WAV_SAMPLE_RATE);
    const channels = intOpt('channels', raw.channels, 1, 64);
    const encoding = enumOpt<RawEncoding>('encoding', raw.encoding, RAW_ENCODINGS);
    if (sampleRate === undefined) usage('--raw needs --rate (samples per second, e.g. 16000)');
    o.raw = { sampleRate, channels: channels ?? 1, encoding: encoding ?? 's16le' };
  } else if (raw.rate !== undefined || raw.channels !== undefined || raw.encoding !== undefined) {
    usage('--rate, --channels and --encoding describe headerless PCM: give --raw too');
  }
  for (const k of Object.keys(o) as (keyof InferOptions)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * The aligner's support_languages from its config.json (read as every model file is: a regular file within
 * the JSON cap), or undefined when it names none or cannot be read (the aligner's own load reports that).
 */
async function alignerConfigLanguages(dir: string): Promise<string[] | undefined> {
  try {
    const bytes = await readRegularFile(join(dir, 'config.json'), { maxBytes: FILE_LIMITS.json, label: 'config.json', tooLargeCode: 'INVALID_CONFIG' });
    const langs = bytes && (JSON.parse(bytes.toString('utf8')) as { support_languages?: unknown }).support_languages;
    return Array.isArray(langs) && langs.length > 0 && langs.every((l) => typeof l === 'string') ? (langs as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/** What `infer` tells on stderr when subtitles get no word times because the aligner does not take the forced language. */
export function alignerLanguageMessage(language: string): string {
  return (
    `rustasr: no word timestamps (the forced aligner does not support language ${JSON.stringify(language)}); ` +
    `subtitle cues follow pauses instead (at most ${FALLBACK_CUE_SECONDS} s, times within a cue estimated).\n`
  );
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
async function findAligner(o: InferOptions, explicit: boolean): Promise<{ dir?: string; why?: string; language?: string }> {
  const ref = o.aligner ?? DEFAULT_ALIGNER;
  try {
    const dir = await resolveModel(ref, explicit ? {} : { offline: true });
    // Subtitles with a forced language the aligner does not take fall back to pause-based cues; an explicit
    // --timestamps word keeps the UNSUPPORTED_LANGUAGE error (the aligner checks it when it loads).
    if (!explicit && o.language !== undefined && o.language !== '') {
      const langs = await alignerConfigLanguages(dir);
      if (langs !== undefined && findLanguage(o.language, langs) === undefined) return { language: o.language };
    }
    return { dir };
  } catch (err) {
    if (err instanceof RustAsrError && (err.code === 'MODEL_NOT_FOUND' || err.code === 'DOWNLOAD_FAILED')) {
      return { why: `${ref}: ${err.code === 'MODEL_NOT_FOUND' ? 'not found' : 'download failed'}` };
    }
    throw err;
  }
}

export interface InferIo {
  stdin: Readable | NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
}

const EXTENSIONS: Record<OutputFormat, string> = { text: 'txt', json: 'json', srt: 'srt', vtt: 'vtt' };

/** Where one input's output goes: the terminal (stdout), or a string written to a file at the end. */
interface Sink {
  write(s: string): Promise<void>;
}

/** Output file names for the inputs: <dir>/<name without extension>.<ext>, made unique (-2, -3, ...). */
function outputPaths(dir: string, files: string[], format: OutputFormat): string[] {
  const used = new Set<string>();
  return files.map((f) => {
    const stem = f === '-' ? 'stdin' : basename(f, extname(f)) || 'audio';
    let name = `${stem}.${EXTENSIONS[format]}`;
    for (let k = 2; used.has(name); k++) name = `${stem}-${k}.${EXTENSIONS[format]}`;
    used.add(name);
    return join(dir, name);
  });
}

/** Transcribes one input into `sink` in `format`. */
async function transcribeOne(
  file: string,
  model: Model,
  o: InferOptions,
  io: InferIo,
  term: Terminal,
  sink: Sink,
  header: string,
  signal: AbortSignal,
  aligner: string | undefined,
): Promise<void> {
  const format = o.format ?? 'text';
  const subtitles = format === 'srt' || format === 'vtt';
  const input: AudioInput = file === '-' ? (io.stdin as NodeJS.ReadableStream) : file;
  const name = file === '-' ? 'stdin' : file;
  const opts: RecognizeOptions = {
    model,
    language: o.language,
    context: o.context,
    maxNewTokens: o.maxNewTokens,
    repetitionGuard: o.repetitionGuard,
    maxSegmentSeconds: subtitles && aligner === undefined ? Math.min(o.maxSegmentSeconds ?? Infinity, FALLBACK_CUE_SECONDS) : o.maxSegmentSeconds,
    raw: o.raw,
    signal,
    onProgress: term.enabled ? (p) => term.status(transcribeLine(file === '-' ? 'stdin' : basename(file), p), p.phase !== 'decoding') : undefined,
  };
  if (aligner !== undefined) {
    opts.timestamps = 'word';
    opts.aligner = aligner;
  }
  const stream = recognize(input, opts);
  const cues: SegmentResult[] = [];
  stream.on('segment', (seg: SegmentResult) => cues.push(seg));
  let wroteHeader = false;
  const head = async () => {
    if (!wroteHeader && header !== '') await sink.write(header);
    wroteHeader = true;
  };
  const marked = new Set<number>();
  const marker = (upTo: number) => {
    for (const seg of stream.segments) {
      if (seg.index > upTo || marked.has(seg.index)) continue;
      marked.add(seg.index);
      term.note(`[segment ${seg.index}: ${seg.start.toFixed(2)}-${seg.end.toFixed(2)} s, ${seg.tokens.length} tokens]`);
    }
  };
  let cueNo = 0;
  const flushCues = async () => {
    if (!subtitles) return;
    for (const seg of cues.splice(0)) await sink.write(segmentCues(seg).map((c) => formatCue(format, ++cueNo, c, o.karaoke === true)).join(''));
  };
  if (format === 'vtt') {
    await head();
    await sink.write('WEBVTT\n\n');
  }
  // Text: each segment's cleaned transcript (the official output parsing, which can rewrite a segment's tail:
  // so it is written once the segment is done), one line per segment.
  const done: SegmentResult[] = [];
  if (format === 'text') stream.on('segment', (seg: SegmentResult) => done.push(seg));
  const flushText = async () => {
    for (const seg of done.splice(0)) {
      await head();
      await sink.write(seg.text + '\n');
      marker(seg.index);
    }
  };
  const tokens: number[] = [];
  for await (const tok of stream) {
    tokens.push(tok.id);
    if (format === 'text') await flushText();
    else await flushCues();
  }
  term.done();
  if (format === 'text') {
    await flushText();
    if (stream.segments.length === 0) {
      await head();
      await sink.write('\n');
    }
    marker(Infinity);
  } else if (format === 'json') {
    const segments = stream.segments;
    const result: Record<string, unknown> = { file: name, text: segments.map((s) => s.text).join(''), language: stream.language ?? null, tokens, timings: stream.timings, segments };
    if (aligner !== undefined) result['words'] = segments.flatMap((s) => s.words ?? []);
    await sink.write(JSON.stringify(result) + '\n');
    marker(Infinity);
  } else {
    await head();
    await flushCues();
    marker(Infinity);
  }
  const t = stream.timings;
  const m = stream.loadedModel;
  const on = m === undefined ? '' : `on ${m.device}${m.deviceName === '' ? '' : ` (${m.deviceName})`}: `;
  term.note(
    `${header === '' ? '' : `${name}: `}${on}audio ${t.audioSeconds.toFixed(2)} s, total ${t.totalMs.toFixed(0)} ms (RTF ${t.rtf.toFixed(3)}): ` +
      `mel ${t.melMs.toFixed(0)} ms, encoder ${t.encoderMs.toFixed(0)} ms, prefill ${t.prefillMs.toFixed(0)} ms, decode ${t.decodeMs.toFixed(0)} ms`,
  );
}

/** Runs `infer` over `files` with validated options; returns the exit code. */
export async function runInfer(files: string[], o: InferOptions, io: InferIo): Promise<number> {
  const format = o.format ?? 'text';
  if (files.length === 0) usage('infer needs an audio file argument (or - for stdin)');
  if (files.filter((f) => f === '-').length > 1) usage('stdin (-) can be given once');
  if (files.length > 1 && (format === 'srt' || format === 'vtt') && o.outputDir === undefined) {
    usage(`--format ${format} with several files needs --output-dir (one subtitle file per input)`);
  }
  const term = terminal(io.stdout, io.stderr, { quiet: o.quiet === true });
  const subtitles = format === 'srt' || format === 'vtt';
  let aligner: string | undefined;
  if (o.timestamps === 'word' || (subtitles && o.timestamps === undefined)) {
    const found = await findAligner(o, o.timestamps === 'word');
    if (found.dir !== undefined) aligner = found.dir;
    else if (found.language !== undefined) io.stderr.write(alignerLanguageMessage(found.language));
    else if (subtitles) io.stderr.write(noAlignerMessage(o.aligner ?? DEFAULT_ALIGNER, found.why!));
    else throw new RustAsrError('MODEL_NOT_FOUND', `--timestamps word needs a forced aligner (${found.why}); get one with: rustasr pull ${o.aligner ?? DEFAULT_ALIGNER}`);
  }
  const controller = new AbortController();
  const closed = watchEpipe(io.stdout, () => controller.abort());
  let code = EXIT_OK;
  const fail = (err: unknown, prefix: string) => {
    term.done();
    const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String((err as Error)?.stack ?? err));
    io.stderr.write(`rustasr: ${prefix}${e.code}: ${e.message}\n`);
    code = Math.max(code, exitCodeOf(e));
  };

  let model: Model;
  try {
    model = await loadModel(o.model ?? DEFAULT_MODEL, {
      device: o.device,
      deviceIndex: o.deviceIndex,
      threads: o.threads,
      kernel: o.kernel,
      quant: o.quant,
      precision: o.precision,
      onProgress: term.enabled ? (p) => term.status(downloadLine(p), p.received === p.total) : undefined,
    });
  } catch (err) {
    fail(err, '');
    return code;
  } finally {
    term.done();
  }
  try {
    if (o.language !== undefined) {
      try {
        normalizeLanguage(o.language, model.info.supportLanguages);
      } catch {
        throw new UsageError(`--language ${o.language}: this model supports ${model.info.supportLanguages.join(', ')}`);
      }
    }
    const outputs = o.outputDir === undefined ? undefined : outputPaths(o.outputDir, files, format);
    if (o.outputDir !== undefined) await mkdir(o.outputDir, { recursive: true });
    for (let i = 0; i < files.length; i++) {
      if (closed()) break;
      const file = files[i]!;
      let text = '';
      const sink: Sink = outputs ? { write: async (s) => void (text += s) } : { write: (s) => (closed() ? Promise.resolve() : term.out(s)) };
      const header = outputs || files.length === 1 || format !== 'text' ? '' : `${i > 0 ? '\n' : ''}==> ${file === '-' ? 'stdin' : file} <==\n`;
      try {
        await transcribeOne(file, model, o, io, term, sink, header, controller.signal, aligner);
        if (outputs) {
          const tmp = `${outputs[i]!}.partial`;
          await writeFile(tmp, text);
          await rename(tmp, outputs[i]!);
        }
      } catch (err) {
        if (closed() && isAbortError(err)) break;
        fail(err, files.length > 1 || outputs ? `${file === '-' ? 'stdin' : file}: ` : '');
        if (exitCodeOf(err) === EXIT_USAGE) break;
      }
    }
  } catch (err) {
    fail(err, '');
  } finally {
    term.done();
    model.dispose();
  }
  if (closed()) return EXIT_EPIPE;
  return code;
}

type Flags = Record<string, unknown> & { config?: unknown; _?: unknown };

/** mri (sade's parser) drops a lone '-'; it is passed through as this placeholder and mapped back. */
export const STDIN_PLACEHOLDER = '\u0000stdin';

/** Largest --config file. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Reads a --config JSON file: an object whose keys are InferOptions names (camelCase) or flag names. */
export async function readConfig(path: string): Promise<RawOptions> {
  let text: string;
  try {
    const bytes = await readRegularFile(path, {
      maxBytes: MAX_CONFIG_FILE_BYTES,
      label: '--config',
      tooLargeCode: 'INVALID_OPTION',
      missing: { code: 'INVALID_OPTION', message: `no such file${notUtf8Hint(path)}` },
    });
    text = (bytes as Buffer).toString('utf8');
  } catch (err) {
    if (err instanceof RustAsrError) throw new UsageError(`cannot read --config ${path}: ${err.message}`);
    throw new UsageError(`cannot read --config ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--config ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`--config ${path} must hold a JSON object`);
  const byFlag = new Map(Object.entries(OPTION_FLAGS).map(([k, f]) => [f, k]));
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json)) {
    const name = key in OPTION_FLAGS ? key : byFlag.get(key);
    if (name === undefined) {
      throw new UsageError(`--config ${path}: unknown key ${JSON.stringify(key)} (known: ${Object.keys(OPTION_FLAGS).join(', ')})`);
    }
    out[name] = value;
  }
  return out as RawOptions;
}

async function infer(first: string | undefined, flags: Flags, io: InferIo): Promise<number> {
  const rest = Array.isArray(flags._) ? (flags._ as unknown[]).map(String) : [];
  const files = [first, ...rest].filter((f): f is string => f !== undefined && f !== '').map((f) => (f === STDIN_PLACEHOLDER ? '-' : f));
  let raw: RawOptions = {};
  if (flags.config !== undefined) raw = await readConfig(stringOpt('config', flags.config)!);
  for (const [name, flag] of Object.entries(OPTION_FLAGS)) {
    if (flags[flag] !== undefined) (raw as Record<string, unknown>)[name] = flags[flag];
  }
  for (const f of ['raw', 'rate', 'channels', 'encoding'] as const) if (flags[f] !== undefined) raw[f] = flags[f];
  const o = parseInferOptions(raw);
  return runInfer(files, o, io);
}

/** Adds `infer` to the rustasr CLI program. */
export function registerInfer(prog: Sade): Sade {
  prog
    .command('infer [file]')
    .describe('Transcribe audio files (WAV, MP3, FLAC, Ogg, WebM, ...; see docs/formats.md); - reads stdin. Several files: one after another.')
    .option('--model, -m', `Model directory or Hugging Face repo id (default ${DEFAULT_MODEL}, downloaded once)`)
    .option('--device', 'auto | cpu | cuda | metal (default auto: CUDA, else Metal, else CPU; see `rustasr devices`)')
    .option('--device-index', 'Which GPU (CUDA device ordinal, default 0)')
    .option('--config', 'JSON file with the same options (camelCase or flag names); flags override it')
    .option('--language', 'Force the language: a name (English) or an ISO 639 code (en, eng); default: detect')
    .option('--context', 'Context text given to the decoder (glossary, names; at most 10,000 characters)')
    .option('--format', 'Output: text | json | srt | vtt (default text; json: one object per file per line; srt/vtt: cues from word times when an aligner is found, else from pauses)')
    .option('--timestamps', 'none | word: word times from the forced aligner (json: "words"; default: word for srt/vtt when an aligner is on disk)')
    .option('--aligner', `Forced aligner directory or hub id (default ${DEFAULT_ALIGNER})`)
    .option('--karaoke', 'vtt: word-level timing inside each cue')
    .option('--output-dir', 'Write one output file per input (<name>.txt|json|srt|vtt) into this directory')
    .option('--max-new-tokens', `Maximum number of generated tokens per segment (default 512, at most ${MAX_NEW_TOKENS_LIMIT})`)
    .option('--max-segment-seconds', `Longest segment decoded in one pass (default ${MAX_SEGMENT_SECONDS}, from 1 to ${MAX_SEGMENT_SECONDS})`)
    .option('--threads', 'Number of CPU threads (default 0: all)')
    .option('--quant', 'Decoder weights: bf16 (default) | int8 (faster, smaller) | int4 (CPU; smallest, larger drift); see docs/performance.md')
    .option('--precision', 'Encoder/prefill arithmetic: f32 (default, exact) | bf16 (faster on AVX512-BF16 CPUs)')
    .option('--repetition-guard', 'Stop runaway repetition early (default; --no-repetition-guard decodes up to --max-new-tokens)')
    .option('--kernel', 'Force a CPU kernel: auto | avx512bf16 | avx512f | avx2 | neon | scalar (default auto)')
    .option('--raw', 'The input is headerless PCM: give --rate, --channels (default 1), --encoding (default s16le)')
    .option('--rate', 'Raw PCM: samples per second')
    .option('--channels', 'Raw PCM: interleaved channels')
    .option('--encoding', `Raw PCM: ${RAW_ENCODINGS.join(' | ')}`)
    .option('--quiet, -q', 'No progress, segment lines or summary on stderr')
    .example('infer speech.wav')
    .example('infer a.mp3 b.flac c.m4a --format json > transcripts.jsonl')
    .example('infer *.wav --output-dir transcripts --format srt')
    .example('infer - --raw --rate 8000 --encoding mulaw < call.ulaw')
    .action(async (file: string | undefined, flags: Flags) => {
      try {
        process.exitCode = await infer(file, flags, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      } catch (err) {
        const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
        process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
        process.exitCode = exitCodeOf(e) === EXIT_USAGE ? EXIT_USAGE : EXIT_FAILURE;
      }
    });
  return prog;
}
