// transcriber(): the streaming recogniser, a Duplex from WAV bytes to Token objects, composed of the stages
//
//   WavDecoder -> Resampler (16 kHz) -> Segmenter -> [native decode, pulled] -> Token objects
import { pipeline, type Readable, type Writable } from 'node:stream';

import { RustAsrError } from '../errors.js';
import { checkContext } from '../text/prompt.js';
import { Resampler } from '../stages/resample.js';
import { Segmenter, MAX_SEGMENT_SECONDS, type AudioSegment } from '../stages/segment.js';
import { TokenStream, type TokenStreamOptions } from '../stages/tokens.js';
import { WavDecoder, type WavStreamFormat } from '../stages/wav-decode.js';
import { checkDevice, loadModel, type LoadModelOptions, type Model } from './model.js';

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
}

export interface TranscriberOptions extends RecognizeOptions {
  /**
   * What is written to the stream: 'wav' (default) WAV file bytes (Buffer / Uint8Array chunks of any size);
   * 'audio' objectMode `{ samples: Float32Array, sampleRate }` chunks of mono audio at any rate.
   */
  input?: 'wav' | 'audio';
}

function modelFor(opts: RecognizeOptions): { model: Model | Promise<Model>; owns: boolean } {
  if (typeof opts.model === 'string') {
    const load = { device: opts.device, deviceIndex: opts.deviceIndex, threads: opts.threads, kernel: opts.kernel, quant: opts.quant, cacheDir: opts.cacheDir, lowMemory: opts.lowMemory, largePages: opts.largePages, signal: opts.signal };
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
  private wavFormat: WavStreamFormat | null = null;

  constructor(opts: TranscriberOptions) {
    const input = opts.input ?? 'wav';
    // Options that need no model fail before one is loaded (the context is checked again at each prompt).
    let early: Error | undefined;
    try {
      checkContext(opts.context);
    } catch (err) {
      early = err as Error;
    }
    const { model, owns } = early === undefined ? modelFor(opts) : { model: Promise.reject(early), owns: false };
    if (early !== undefined) (model as Promise<Model>).catch(() => undefined);
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
    if (input !== 'wav' && input !== 'audio') {
      queueMicrotask(() => this.destroy(new RustAsrError('INVALID_OPTION', `input must be 'wav' or 'audio', got ${String(input)}`)));
    }
    if (early !== undefined) queueMicrotask(() => this.destroy(early));
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
      const wav = new WavDecoder();
      wav.once('format', (f: WavStreamFormat) => {
        this.wavFormat = f;
        this.emit('format', f);
      });
      stages = [wav, resampler, segmenter];
    }
    this.head = stages[0] as Writable;
    pipeline(stages as unknown as [Readable, Writable], (err) => {
      if (err) this.destroy(err);
    });
    // Stage errors reach this stream through the pipeline callback or the segment iterator.
    for (const s of stages) s.on('error', () => {});
    this.segments$ = segmenter[Symbol.asyncIterator]();
  }

  /** The WAV stream format, once the data chunk has begun (null before, and for `input: 'audio'`). */
  get format(): WavStreamFormat | null {
    return this.wavFormat;
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
    return r.done ? null : (r.value as AudioSegment);
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
