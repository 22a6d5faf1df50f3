// transcriber(): the streaming recogniser, a Duplex from WAV bytes to Token objects, composed of the stages
//
//   AudioDecoder (any format) -> Resampler (16 kHz) -> Segmenter -> [native decode, pulled] -> Token objects
import { pipeline, Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { performance } from 'node:perf_hooks';

import type { RawAudioFormat } from '../audio/open.js';
import type { AudioChunk, AudioStreamFormat } from '../audio/types.js';

import { pickLoadOptions } from '../core/options.js';
import { RustAsrError, isRustAsrError } from '../errors.js';
import { AudioDecoder } from '../stages/audio-decode.js';
import { checkContext } from '../text/prompt.js';
import { Resampler } from '../stages/resample.js';
import { Segmenter, MAX_SEGMENT_SECONDS, type AudioSegment } from '../stages/segment.js';
import { TokenStream, type SegmentResult, type TokenStreamOptions } from '../stages/tokens.js';
import { pyRound3 } from '../text/aligner-text.js';
import { pyStrip } from '../text/asr-output.js';
import { MAX_ALIGN_SECONDS, alignSamples, alignerFor, alignerLanguage, loadOptionsOf, type AlignItem } from './align.js';
import { LiveTranscriber, type ListenOptions } from './listen.js';
import { checkDevice, loadModel, requireKind, type LoadModelOptions, type Model } from './model.js';

/** Where a transcription stands (the `onProgress` option of transcriber(), recognize() and transcribe()). */
export interface TranscribeProgress {
  /** Seconds of audio whose transcription is done (the end of the last finished segment). */
  audioSeconds: number;
  /** Seconds of audio decoded from the input so far (reading runs ahead of recognition). */
  inputSeconds: number;
  /** The input's length in seconds, once the whole input has been decoded; undefined before. */
  totalSeconds: number | undefined;
  /**
   * 'reading': no segment started yet; 'encoding': a segment's audio is being encoded and prefilled (the
   * long wait before its first token); 'decoding': its tokens are being generated; 'done': all finished.
   */
  phase: 'reading' | 'encoding' | 'decoding' | 'done';
  /** Index of the segment being transcribed (or last transcribed). */
  segment: number;
  /** The segment's span in the input, in seconds (undefined before the first segment). */
  segmentStart: number | undefined;
  segmentEnd: number | undefined;
  /** Tokens generated so far (all segments). */
  tokens: number;
  /** Milliseconds since the stream was created. */
  elapsedMs: number;
}

/** Least time between two progress reports of the same phase. */
const PROGRESS_INTERVAL_MS = 100;

/** A word of the transcript with its time span in the input, in seconds (to the millisecond). */
export type Word = AlignItem;

export interface RecognizeOptions extends LoadModelOptions {
  /**
   * A loaded Model (shared, not disposed), or a model directory (later also a hub id): the model is then
   * loaded for this stream only and disposed when the stream closes (no cache; see docs/guide.md).
   */
  model: Model | string;
  /** Force the language (one of the model's support_languages, any case); omit to detect it. */
  language?: string;
  /** System-prompt context (glossary, names) given to the decoder; at most 10,000 characters (MAX_CONTEXT_CHARS). */
  context?: string;
  /** Most tokens generated per segment (default 512). */
  maxNewTokens?: number;
  /** Aborts: decoding stops between two steps and the stream fails with name 'AbortError', code 'ABORTED'. */
  signal?: AbortSignal;
  /** Longest segment decoded in one pass, in seconds (default 1200, the official limit); longer audio is split at quiet points. */
  maxSegmentSeconds?: number;
  /** Tokens decoded ahead of the consumer (default 8). */
  highWaterMark?: number;
  /**
   * 'word': time every word with the forced aligner (`aligner`). Each segment is then at most
   * `maxAlignSeconds` (180) long, as in the official pipeline; after a segment's last token its words are
   * aligned and reported by a 'words' event, then in `SegmentResult.words`. Default 'none'.
   */
  timestamps?: 'none' | 'word';
  /**
   * With `timestamps: 'word'`: the forced aligner, a loaded Model (shared, not disposed), a directory or a hub
   * id (loaded for this stream, in BF16, with the stream's device and thread options). Default
   * 'Qwen/Qwen3-ForcedAligner-0.6B'.
   */
  aligner?: Model | string;
  /** With `timestamps: 'word'`: the longest segment aligned in one pass, in seconds (default and most 180). */
  maxAlignSeconds?: number;
  /**
   * Stop a segment's decoding early once its output is a runaway repetition the official clean-up removes
   * anyway (default true): the cleaned text is the one decoding to maxNewTokens would give. `false` decodes
   * to the end as before. See docs/guide.md, "Repetition".
   */
  repetitionGuard?: boolean;
  /** Headerless PCM input: its rate, channels and encoding ('s16le', 's24le', 's32le', 'f32le', 'u8', 'mulaw', 'alaw'). */
  raw?: RawAudioFormat;
  /**
   * The ffmpeg used for formats with no WebAssembly decoder (MP4/M4A, AAC, AIFF, ...): a path, or false for
   * none (default: $RUSTASR_FFMPEG, else `ffmpeg` on PATH). See docs/formats.md.
   */
  ffmpeg?: string | false;
  /** Called as the transcription advances (at most every 100 ms within a phase, and at each phase change). */
  onProgress?: (progress: TranscribeProgress) => void;
}

export interface TranscriberOptions extends RecognizeOptions {
  /**
   * What is written to the stream: 'bytes' (default) audio file bytes of any supported format, detected by
   * their magic bytes (or raw PCM with `raw`); 'wav' WAV bytes only; 'audio' objectMode
   * `{ samples: Float32Array, sampleRate }` chunks of mono audio at any rate.
   */
  input?: 'bytes' | 'wav' | 'audio';
  /** The file the bytes come from, when there is one (lets ffmpeg read the file itself). */
  sourcePath?: string;
}

/** Counts the seconds of audio going by (for progress), passing the chunks on unchanged. */
class SecondsCounter extends Transform {
  seconds = 0;
  ended = false;
  constructor(private readonly onChange: () => void) {
    super({ objectMode: true, highWaterMark: 1 });
  }
  override _transform(chunk: AudioChunk, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seconds += chunk.samples.length / chunk.sampleRate;
    this.onChange();
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.ended = true;
    this.onChange();
    cb();
  }
}

function modelFor(opts: RecognizeOptions): { model: Model | Promise<Model>; owns: boolean } {
  if (typeof opts.model === 'string') {
    const model = loadModel(opts.model, pickLoadOptions(opts)).then((m) => {
      try {
        requireKind(m, 'asr');
      } catch (err) {
        m.dispose();
        throw err;
      }
      return m;
    });
    return { model, owns: true };
  }
  if (opts.model === undefined || opts.model === null || typeof (opts.model as Model).decode !== 'function') {
    return { model: Promise.reject(new RustAsrError('INVALID_OPTION', 'the model option must be a Model or a model directory')), owns: false };
  }
  const model = opts.model;
  // A loaded model's device was chosen at load time: a request for another one fails rather than being ignored.
  return {
    model: Promise.resolve().then(() => {
      requireKind(model, 'asr');
      const want = checkDevice(opts.device);
      if (want !== 'auto' && want !== model.device) {
        throw new RustAsrError('UNSUPPORTED_DEVICE', `device '${want}' was asked for, but the given model was loaded on '${model.device}'`);
      }
      return model;
    }),
    owns: false,
  };
}

/** The aligner of a `timestamps: 'word'` stream, checked against the forced language. */
function alignerOf(opts: RecognizeOptions): { aligner: Promise<Model>; owns: Promise<boolean> } | undefined {
  const ts = opts.timestamps ?? 'none';
  if (ts !== 'none' && ts !== 'word') {
    const err = Promise.reject(new RustAsrError('INVALID_OPTION', `timestamps must be 'none' or 'word', got ${String(ts)}`));
    return { aligner: err, owns: Promise.resolve(false) };
  }
  if (ts === 'none') return undefined;
  // The aligner runs in BF16 (its timestamps are classes with narrow margins; quant applies to the ASR model).
  const loaded = Promise.resolve().then(() => alignerFor(opts.aligner, { ...loadOptionsOf(opts), quant: undefined, precision: undefined }));
  const aligner = loaded.then(({ model }) => {
    if (opts.language !== undefined && opts.language !== null && opts.language !== '') alignerLanguage(model, opts.language);
    return model;
  });
  return { aligner, owns: loaded.then((l) => l.owns, () => false) };
}

/**
 * The streaming recogniser. Writable side: WAV bytes (or AudioChunks with `input: 'audio'`); readable
 * side: objectMode Tokens, async-iterable. Errors of any stage (INVALID_WAV, TRUNCATED_WAV, EMPTY_AUDIO,
 * UNSUPPORTED_LANGUAGE, MODEL_NOT_FOUND, UNSUPPORTED_DEVICE, ...) destroy the stream with that
 * RustAsrError, so they reach `pipeline()` and `for await` unchanged.
 *
 * Events: 'format' (AudioStreamFormat) when the input's format is known; 'language' (language, segment);
 * 'words' (words: Word[], segment: number) with `timestamps: 'word'`, after the segment's last token and
 * before its 'segment' event; 'segment' (SegmentResult) when a segment is done. Properties: `language`,
 * `segments`, `timings`.
 */
export class Transcriber extends TokenStream {
  private readonly head: Writable;
  private readonly segmenter: Segmenter;
  private readonly segments$: AsyncIterator<unknown>;
  private audioFormat: AudioStreamFormat | null = null;
  private readonly progress: ((p: TranscribeProgress) => void) | undefined;
  private readonly started = performance.now();
  private counter: SecondsCounter | undefined;
  private phase: TranscribeProgress['phase'] = 'reading';
  private progressSegment: AudioSegment | undefined;
  private doneSeconds = 0;
  private tokenCount = 0;
  private lastReport = -Infinity;
  private readonly aligner: Promise<Model> | undefined;

  constructor(opts: TranscriberOptions) {
    const input = opts.input ?? 'bytes';
    // Options that need no model fail before one is loaded (the context is checked again at each prompt).
    let early: Error | undefined;
    try {
      checkContext(opts.context);
    } catch (err) {
      early = err as Error;
    }
    const { model, owns } = early === undefined ? modelFor(opts) : { model: Promise.reject(early), owns: false };
    if (early !== undefined) (model as Promise<Model>).catch(() => undefined);
    const align = early === undefined ? alignerOf(opts) : undefined;
    const base: TokenStreamOptions = {
      model,
      ownsModel: owns,
      language: opts.language,
      context: opts.context,
      maxNewTokens: opts.maxNewTokens,
      signal: opts.signal,
      highWaterMark: opts.highWaterMark,
      repetitionGuard: opts.repetitionGuard,
    };
    super(base, { writableObjectMode: input === 'audio' });
    if (input !== 'bytes' && input !== 'wav' && input !== 'audio') {
      queueMicrotask(() => this.destroy(new RustAsrError('INVALID_OPTION', `input must be 'bytes', 'wav' or 'audio', got ${String(input)}`)));
    }
    if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') {
      queueMicrotask(() => this.destroy(new RustAsrError('INVALID_OPTION', 'onProgress must be a function')));
    } else {
      this.progress = opts.onProgress;
    }
    this.aligner = align?.aligner;
    if (align) {
      // A failed aligner (not found, wrong kind, unsupported language) fails the stream; an owned one is
      // disposed with it.
      align.aligner.catch((err: unknown) => queueMicrotask(() => this.destroy(err as Error)));
      this.once('close', () => {
        void align.owns.then((o) => (o ? align.aligner.then((m) => m.dispose(), () => {}) : undefined));
      });
    }
    if (early !== undefined) queueMicrotask(() => this.destroy(early));
    let segmenter: Segmenter;
    try {
      let maxSeconds = opts.maxSegmentSeconds ?? MAX_SEGMENT_SECONDS;
      if (align) {
        const a = opts.maxAlignSeconds ?? MAX_ALIGN_SECONDS;
        if (!(Number.isFinite(a) && a > 0 && a <= MAX_ALIGN_SECONDS)) {
          throw new RustAsrError('INVALID_OPTION', `maxAlignSeconds must be a number in (0, ${MAX_ALIGN_SECONDS}], got ${String(opts.maxAlignSeconds)}`);
        }
        if (Number.isFinite(maxSeconds)) maxSeconds = Math.min(maxSeconds, a);
      }
      segmenter = new Segmenter({ maxSeconds });
    } catch (err) {
      segmenter = new Segmenter();
      queueMicrotask(() => this.destroy(err as Error));
    }
    this.segmenter = segmenter;
    const resampler = new Resampler();
    let stages: (Readable | Writable)[];
    if (input === 'audio') {
      stages = [resampler, segmenter];
    } else {
      let dec: AudioDecoder;
      try {
        dec = new AudioDecoder({ format: input === 'wav' ? 'wav' : 'auto', raw: opts.raw, ffmpeg: opts.ffmpeg, path: opts.sourcePath });
      } catch (err) {
        dec = new AudioDecoder();
        queueMicrotask(() => this.destroy(err as Error));
      }
      dec.once('format', (f: AudioStreamFormat) => {
        this.audioFormat = f;
        this.emit('format', f);
      });
      stages = [dec, resampler, segmenter];
    }
    if (this.progress) {
      this.counter = new SecondsCounter(() => this.report(false));
      stages.splice(stages.length - 1, 0, this.counter);
      this.on('segment', (seg: SegmentResult) => {
        this.doneSeconds = seg.end;
        this.report(false);
      });
      this.once('end', () => {
        this.phase = 'done';
        this.report(true);
      });
    }
    this.head = stages[0] as Writable;
    pipeline(stages as unknown as [Readable, Writable], (err) => {
      if (err) this.destroy(err);
    });
    // Stage errors reach this stream through the pipeline callback or the segment iterator.
    for (const s of stages) s.on('error', () => {});
    this.segments$ = segmenter[Symbol.asyncIterator]();
  }

  /** The input's format once known (container, codec, rate, channels; null before, and for `input: 'audio'`). */
  get format(): AudioStreamFormat | null {
    return this.audioFormat;
  }

  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk !== null && this.progress) {
      this.tokenCount++;
      const changed = this.phase !== 'decoding';
      this.phase = 'decoding';
      this.report(changed);
    }
    return super.push(chunk, encoding);
  }

  /** Calls onProgress (throttled within a phase). */
  private report(force: boolean): void {
    if (!this.progress) return;
    const now = performance.now();
    if (!force && now - this.lastReport < PROGRESS_INTERVAL_MS) return;
    this.lastReport = now;
    const c = this.counter;
    try {
      this.progress({
        audioSeconds: this.doneSeconds,
        inputSeconds: c?.seconds ?? 0,
        totalSeconds: c?.ended ? c.seconds : undefined,
        phase: this.phase,
        segment: this.progressSegment?.index ?? 0,
        segmentStart: this.progressSegment?.start,
        segmentEnd: this.progressSegment?.end,
        tokens: this.tokenCount,
        elapsedMs: now - this.started,
      });
    } catch (err) {
      this.destroy(err as Error);
    }
  }

  override _write(chunk: unknown, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.head.write(chunk)) callback();
    else this.head.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.head.end();
    callback();
  }

  protected async nextSegment(): Promise<AudioSegment | null> {
    const r = await this.segments$.next();
    if (r.done) return null;
    const seg = r.value as AudioSegment;
    if (this.progress) {
      this.progressSegment = seg;
      this.phase = 'encoding';
      this.report(true);
    }
    return seg;
  }

  /** `timestamps: 'word'`: aligns the segment's text to its audio, shifts the times, emits 'words'. */
  protected override async finishSegment(result: SegmentResult, audio: AudioSegment): Promise<void> {
    if (!this.aligner) return;
    const aligner = await this.aligner;
    let words: Word[] = [];
    if (pyStrip(result.text) !== '' && !this.destroyed) {
      try {
        const d = await alignSamples(aligner, audio.samples, result.text, result.language);
        words = d.items.map((w) => ({ text: w.text, start: pyRound3(w.start + audio.start), end: pyRound3(w.end + audio.start) }));
      } catch (err) {
        // A transcript of punctuation only has no word to time.
        if (!isRustAsrError(err, 'NO_ALIGNABLE_TEXT')) throw err;
      }
    }
    if (this.destroyed) return;
    result.words = words;
    this.emit('words', words, result.index);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // Without an error: the internal pipeline may be over already (its listeners gone), and the error is
    // this stream's to report.
    if (!this.segmenter.destroyed) this.segmenter.destroy();
    super._destroy(err, callback);
  }
}

/**
 * Creates a streaming recogniser (see Transcriber): `pipeline(fs.createReadStream(f), transcriber({ model }), sink)`.
 * With `live: true`, a LiveTranscriber: the same input, partial and final events out while the audio arrives
 * (see listen()).
 */
export function transcriber(opts: TranscriberOptions & { live?: false }): Transcriber;
export function transcriber(opts: ListenOptions & { live: true }): LiveTranscriber;
export function transcriber(opts: (TranscriberOptions & { live?: false }) | (ListenOptions & { live: true })): Transcriber | LiveTranscriber {
  if (opts.live === true) return new LiveTranscriber(opts);
  return new Transcriber(opts);
}
