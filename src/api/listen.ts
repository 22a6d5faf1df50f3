// listen() and transcriber({ live: true }): live recognition as a Duplex from audio to events.
//
//   bytes -> WavDecoder -> Resampler (16 kHz) -> LiveRecognizer (core/live.ts) -> partial / final events
//
// The readable side is pull-based with its own queue: a consumer that falls behind gets the newest partial of a
// segment (older queued partials of that segment are replaced), and every final, in order. The writable side
// gives its source backpressure: a write is acknowledged once the steps it completed have run, so a file is
// consumed as fast as the engine allows and gives the same events as a paced source.
import { createReadStream } from 'node:fs';
import { Duplex, Readable, Transform, Writable, pipeline, type DuplexOptions, type TransformCallback } from 'node:stream';

import { abortError } from '../core/abort.js';
import { LiveRecognizer, type LiveEvent, type LiveOptions } from '../core/live.js';
import { loadModel, type LoadModelOptions, type Model } from '../core/model.js';
import { RustAsrError } from '../errors.js';
import { DEFAULT_TARGET_RATE, Resampler } from '../stages/resample.js';
import { WavDecoder, type AudioChunk, type WavStreamFormat } from '../stages/wav-decode.js';

export type { FinalEvent, LiveEvent, LiveOptions, LiveStepInfo, LiveStepStats, PartialEvent } from '../core/live.js';

/** Raw PCM input: interleaved samples of a declared format. */
export interface RawAudioFormat {
  sampleRate: number;
  channels?: number;
  /** Sample encoding (default 's16le'). */
  encoding?: 's16le' | 'f32le';
}

export interface ListenOptions extends LiveOptions, LoadModelOptions {
  /** A loaded Model (shared, not disposed), or a model directory / hub id loaded for this stream only. */
  model: Model | string;
  /**
   * What is written: 'wav' WAV file bytes; 'audio' objectMode `{ samples, sampleRate }` chunks of mono audio at
   * any rate; a RawAudioFormat for headerless PCM bytes. Default: the first chunk decides between 'wav' (bytes)
   * and 'audio' (objects).
   */
  input?: 'wav' | 'audio' | RawAudioFormat;
}

/** Decodes headerless interleaved PCM (s16le or f32le) to mono AudioChunks. */
class RawPcmDecoder extends Transform {
  private rest = Buffer.alloc(0);
  private readonly frameBytes: number;
  private readonly channels: number;
  private readonly bytes: number;
  constructor(private readonly fmt: RawAudioFormat) {
    super({ readableObjectMode: true, writableObjectMode: false });
    this.channels = fmt.channels ?? 1;
    this.bytes = (fmt.encoding ?? 's16le') === 'f32le' ? 4 : 2;
    this.frameBytes = this.channels * this.bytes;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const buf = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    const frames = Math.floor(buf.length / this.frameBytes);
    this.rest = Buffer.from(buf.subarray(frames * this.frameBytes));
    if (frames > 0) {
      const out = new Float32Array(frames);
      for (let f = 0; f < frames; f++) {
        let sum = 0;
        for (let c = 0; c < this.channels; c++) {
          const at = f * this.frameBytes + c * this.bytes;
          sum += this.bytes === 2 ? buf.readInt16LE(at) / 32768 : buf.readFloatLE(at);
        }
        out[f] = sum / this.channels;
      }
      const chunkOut: AudioChunk = { samples: out, sampleRate: this.fmt.sampleRate };
      this.push(chunkOut);
    }
    cb();
  }
}

function checkRawFormat(f: RawAudioFormat): void {
  const ok =
    f !== null &&
    typeof f === 'object' &&
    Number.isInteger(f.sampleRate) &&
    f.sampleRate >= 1000 &&
    f.sampleRate <= 384_000 &&
    (f.channels === undefined || (Number.isInteger(f.channels) && f.channels >= 1 && f.channels <= 64)) &&
    (f.encoding === undefined || f.encoding === 's16le' || f.encoding === 'f32le');
  if (!ok) throw new RustAsrError('INVALID_OPTION', `raw input needs { sampleRate: 1000..384000, channels?: 1..64, encoding?: 's16le' | 'f32le' }, got ${JSON.stringify(f)}`);
}

/**
 * Live recognition as a Duplex: write audio (WAV bytes by default), read LiveEvents (objectMode,
 * async-iterable). Errors (bad input, bad options, abort: code ABORTED) destroy the stream with their
 * RustAsrError; the native session is freed when the stream closes. 'ready' is emitted once the model is
 * loaded and the options are accepted (before any event).
 */
export class LiveTranscriber extends Duplex {
  private readonly queue: LiveEvent[] = [];
  private wanting = false;
  private ended = false;
  private head: Writable | undefined;
  private inputKind: 'bytes' | 'audio' | undefined;
  private inputDone: (() => void) | undefined;
  private readonly modelReady: Promise<Model>;
  private recognizer: LiveRecognizer | undefined;
  private wavFormat: WavStreamFormat | null = null;
  private readonly onAbort: () => void;

  constructor(private readonly opts: ListenOptions, duplex: DuplexOptions = {}) {
    const input = opts.input;
    // Without `input`, the first chunk decides: bytes are WAV, { samples, sampleRate } objects are audio.
    // The writable side takes bytes and objects alike (checked in _write), so a wrong chunk type is an error, not a throw.
    super({ ...duplex, readableObjectMode: true, readableHighWaterMark: 1, writableObjectMode: true });
    const owns = typeof opts.model === 'string';
    this.modelReady = this.prepare();
    this.modelReady.catch((err: unknown) => this.fail(err));
    this.onAbort = () => {
      this.recognizer?.abort();
      this.destroy(abortError(opts.signal?.reason));
    };
    if (opts.signal) {
      if (opts.signal.aborted) queueMicrotask(this.onAbort);
      else opts.signal.addEventListener('abort', this.onAbort, { once: true });
    }
    this.once('close', () => {
      opts.signal?.removeEventListener('abort', this.onAbort);
      this.recognizer?.close();
      if (owns) void this.modelReady.then((m) => m.dispose(), () => {});
    });
    if (input !== undefined) {
      this.inputKind = input === 'audio' ? 'audio' : 'bytes';
      try {
        this.head = this.stages(input);
      } catch (err) {
        queueMicrotask(() => this.destroy(err as Error));
      }
    }
  }

  /** Builds the stages before the recogniser (decode, resample to the model's rate); returns the first. */
  private stages(input: 'wav' | 'audio' | RawAudioFormat): Writable {
    const resampler = new Resampler();
    const stages: (Readable | Writable)[] = [];
    if (input === 'audio') {
      stages.push(resampler);
    } else if (input === 'wav') {
      const wav = new WavDecoder();
      wav.once('format', (f: WavStreamFormat) => {
        this.wavFormat = f;
        this.emit('format', f);
      });
      stages.push(wav, resampler);
    } else {
      checkRawFormat(input);
      stages.push(new RawPcmDecoder(input), resampler);
    }
    const sink = new Writable({
      objectMode: true,
      highWaterMark: 1,
      write: (chunk: AudioChunk, _enc, cb) => {
        this.feed(chunk.samples).then(() => cb(), (err: unknown) => cb(err as Error));
      },
      final: (cb) => {
        this.finishInput().then(() => cb(), (err: unknown) => cb(err as Error));
      },
    });
    stages.push(sink);
    for (const s of stages) s.on('error', () => {});
    pipeline(stages as unknown as [Readable, Writable], (err) => {
      if (err) this.fail(err);
    });
    return stages[0] as Writable;
  }

  /** The WAV stream format, once known (null before, and for other inputs). */
  get format(): WavStreamFormat | null {
    return this.wavFormat;
  }

  private async prepare(): Promise<Model> {
    const o = this.opts;
    let model: Model;
    if (typeof o.model === 'string') {
      model = await loadModel(o.model, {
        device: o.device,
        deviceIndex: o.deviceIndex,
        threads: o.threads,
        kernel: o.kernel,
        quant: o.quant,
        cacheDir: o.cacheDir,
        lowMemory: o.lowMemory,
        largePages: o.largePages,
      });
    } else if (o.model && typeof (o.model as Model).decode === 'function') {
      model = o.model;
    } else {
      throw new RustAsrError('INVALID_OPTION', 'the model option must be a Model or a model directory');
    }
    await model.ready();
    if (this.destroyed) return model;
    this.recognizer = new LiveRecognizer(model, o, (e) => this.enqueue(e));
    // The model is loaded and the options are accepted: audio written from now on is decoded.
    this.emit('ready');
    return model;
  }

  private async feed(samples: Float32Array): Promise<void> {
    await this.modelReady;
    if (this.destroyed || !this.recognizer) return;
    await this.recognizer.push(samples);
  }

  private async finishInput(): Promise<void> {
    try {
      await this.modelReady;
      if (this.destroyed || !this.recognizer) return;
      await this.recognizer.end();
      this.ended = true;
      this.drain();
    } finally {
      this.inputDone?.();
    }
  }

  private enqueue(e: LiveEvent): void {
    if (e.type === 'partial') {
      // Coalesce: a newer hypothesis of the same segment replaces a queued one.
      const last = this.queue[this.queue.length - 1];
      if (last && last.type === 'partial' && last.segment === e.segment) this.queue[this.queue.length - 1] = e;
      else this.queue.push(e);
    } else {
      // A final supersedes the segment's queued partials.
      for (let i = this.queue.length - 1; i >= 0; i--) {
        const q = this.queue[i]!;
        if (q.type === 'partial' && q.segment === e.segment) this.queue.splice(i, 1);
      }
      this.queue.push(e);
    }
    this.drain();
  }

  private drain(): void {
    while (this.wanting && this.queue.length > 0) {
      this.wanting = this.push(this.queue.shift());
    }
    if (this.wanting && this.ended && this.queue.length === 0) {
      this.wanting = false;
      this.push(null);
    }
  }

  private fail(err: unknown): void {
    if (this.destroyed) return;
    this.destroy(err instanceof Error ? err : new RustAsrError('INTERNAL', String(err)));
  }

  /** Stream time in seconds of the audio decoded so far (given to the recogniser, at the model's rate). */
  get audioSeconds(): number {
    return this.recognizer?.seconds ?? 0;
  }

  /** Events waiting for the consumer (partials coalesced). */
  get queuedEvents(): number {
    return this.queue.length;
  }

  override _read(): void {
    this.wanting = true;
    this.drain();
  }

  override _write(chunk: unknown, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const isBytes = chunk instanceof Uint8Array;
    const isAudio = !isBytes && chunk !== null && typeof chunk === 'object' && (chunk as AudioChunk).samples instanceof Float32Array;
    if (!this.head) {
      if (!isBytes && !isAudio) {
        callback(new RustAsrError('INVALID_ARGUMENT', 'live input must be WAV bytes (Buffer / Uint8Array) or { samples: Float32Array, sampleRate } chunks'));
        return;
      }
      this.head = this.stages(isBytes ? 'wav' : 'audio');
      this.inputKind = isBytes ? 'bytes' : 'audio';
    }
    if ((this.inputKind === 'bytes' && !isBytes) || (this.inputKind === 'audio' && !isAudio)) {
      callback(new RustAsrError('INVALID_ARGUMENT', this.inputKind === 'bytes' ? 'this live input takes bytes (Buffer / Uint8Array)' : 'this live input takes { samples: Float32Array, sampleRate } chunks'));
      return;
    }
    const head = this.head;
    if (head.write(chunk)) callback();
    else head.once('drain', () => callback());
  }

  // 'finish' comes once every written sample has been decoded (the last final is queued).
  override _final(callback: (error?: Error | null) => void): void {
    if (!this.head) {
      // No audio at all.
      this.ended = true;
      this.drain();
      callback();
      return;
    }
    this.inputDone = () => callback();
    this.head.end();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.recognizer?.abort();
    if (this.head && !this.head.destroyed) this.head.destroy();
    callback(err);
  }
}

/** A source for listen(): a path, a Readable of bytes or of AudioChunks, or an async iterable of either. */
export type LiveSource = string | NodeJS.ReadableStream | AsyncIterable<Uint8Array | AudioChunk>;

/**
 * Live recognition of `source`: an async iterable (a LiveTranscriber) of partial and final events as the audio
 * arrives. A path is a WAV file; a stream or iterable is WAV bytes when its chunks are bytes and audio when they
 * are `{ samples, sampleRate }` objects, unless `input` says otherwise (raw PCM: `input: { sampleRate, ... }`).
 */
export function listen(source: LiveSource, opts: ListenOptions): LiveTranscriber {
  let src: Readable;
  let input = opts.input;
  try {
    if (typeof source === 'string') {
      const path = source;
      src = Readable.from(
        (async function* () {
          try {
            for await (const chunk of createReadStream(path)) yield chunk as Buffer;
          } catch (err) {
            throw new RustAsrError('IO_ERROR', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
          }
        })(),
        { objectMode: false },
      );
      input ??= 'wav';
    } else if (source instanceof Readable) {
      src = source;
    } else if (source !== null && typeof source === 'object' && Symbol.asyncIterator in source) {
      src = Readable.from(source as AsyncIterable<unknown>, { objectMode: true });
    } else if (source !== null && typeof source === 'object' && typeof (source as NodeJS.ReadableStream).pipe === 'function') {
      src = new Readable({ objectMode: false }).wrap(source as NodeJS.ReadableStream);
    } else {
      throw new RustAsrError('INVALID_ARGUMENT', 'listen() takes a path, a readable stream or an async iterable of audio');
    }
  } catch (err) {
    const t = new LiveTranscriber({ ...opts, input: 'audio' });
    queueMicrotask(() => t.destroy(err as Error));
    return t;
  }
  const t = new LiveTranscriber({ ...opts, input });
  pipeline(src, t, () => {});
  return t;
}

export { DEFAULT_TARGET_RATE };
