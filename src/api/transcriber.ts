// transcriber(): the streaming recogniser, a Duplex from audio file bytes to Token objects, composed of the stages
//
//   AudioDecoder (any format) -> Resampler (16 kHz) -> Segmenter -> [native decode, pulled] -> Token objects
import { pipeline, Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { performance } from 'node:perf_hooks';

import type { RawAudioFormat } from '../audio/open.js';
import type { AudioChunk, AudioStreamFormat } from '../audio/types.js';
import { RustAsrError } from '../errors.js';
import { AudioDecoder } from '../stages/audio-decode.js';
import { Resampler } from '../stages/resample.js';
import { Segmenter, MAX_SEGMENT_SECONDS, type AudioSegment } from '../stages/segment.js';
import { TokenStream, type SegmentResult, type TokenStreamOptions } from '../stages/tokens.js';
import { checkDevice, loadModel, type LoadModelOptions, type Model } from './model.js';

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

export interface RecognizeOptions extends LoadModelOptions {
  /**
   * A loaded Model (shared, not disposed), or a model directory (later also a hub id): the model is then
   * loaded for this stream only and disposed when the stream closes (no cache; see docs/guide.md).
   */
  model: Model | string;
  /** Force the language (one of the model's support_languages, any case); omit to detect it. */
  language?: string;
  /** System-prompt context (glossary, names) given to the decoder. */
  context?: string;
  /** Most tokens generated per segment (default 512). */
  maxNewTokens?: number;
  /** Aborts: decoding stops between two steps and the stream fails with name 'AbortError', code 'ABORTED'. */
  signal?: AbortSignal;
  /** Longest segment decoded in one pass, in seconds (default 1200, the official limit); longer audio is split at quiet points. */
  maxSegmentSeconds?: number;
  /** Tokens decoded ahead of the consumer (default 8). */
  highWaterMark?: number;
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
    const load = { device: opts.device, deviceIndex: opts.deviceIndex, threads: opts.threads, kernel: opts.kernel, quant: opts.quant, cacheDir: opts.cacheDir, lowMemory: opts.lowMemory, largePages: opts.largePages };
    return { model: loadModel(opts.model, load), owns: true };
  }
  if (opts.model === undefined || opts.model === null || typeof (opts.model as Model).decode !== 'function') {
    return { model: Promise.reject(new RustAsrError('INVALID_OPTION', 'the model option must be a Model or a model directory')), owns: false };
  }
  const model = opts.model;
  // A loaded model's device was chosen at load time: a request for another one fails rather than being ignored.
  return {
    model: Promise.resolve().then(() => {
      const want = checkDevice(opts.device);
      if (want !== 'auto' && want !== model.device) {
        throw new RustAsrError('UNSUPPORTED_DEVICE', `device '${want}' was asked for, but the given model was loaded on '${model.device}'`);
      }
      return model;
    }),
    owns: false,
  };
}

/**
 * The streaming recogniser. Writable side: WAV bytes (or AudioChunks with `input: 'audio'`); readable
 * side: objectMode Tokens, async-iterable. Errors of any stage (INVALID_WAV, TRUNCATED_WAV, EMPTY_AUDIO,
 * UNSUPPORTED_LANGUAGE, MODEL_NOT_FOUND, UNSUPPORTED_DEVICE, ...) destroy the stream with that
 * RustAsrError, so they reach `pipeline()` and `for await` unchanged.
 *
 * Events: 'format' (WavStreamFormat) when the WAV data begins; 'language' (language, segment);
 * 'segment' (SegmentResult) when a segment is done. Properties: `language`, `segments`, `timings`.
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

  constructor(opts: TranscriberOptions) {
    const input = opts.input ?? 'bytes';
    const { model, owns } = modelFor(opts);
    const base: TokenStreamOptions = {
      model,
      ownsModel: owns,
      language: opts.language,
      context: opts.context,
      maxNewTokens: opts.maxNewTokens,
      signal: opts.signal,
      highWaterMark: opts.highWaterMark,
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
    let segmenter: Segmenter;
    try {
      segmenter = new Segmenter({ maxSeconds: opts.maxSegmentSeconds ?? MAX_SEGMENT_SECONDS });
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

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // Without an error: the internal pipeline may be over already (its listeners gone), and the error is
    // this stream's to report.
    if (!this.segmenter.destroyed) this.segmenter.destroy();
    super._destroy(err, callback);
  }
}

/** Creates a streaming recogniser (see Transcriber): `pipeline(fs.createReadStream(f), transcriber({ model }), sink)`. */
export function transcriber(opts: TranscriberOptions): Transcriber {
  return new Transcriber(opts);
}
