// listen() and transcriber({ live: true }): live recognition as a Duplex from audio to events.
//
//   bytes -> WavDecoder -> Resampler (16 kHz) -> LiveRecognizer (core/live.ts) -> partial / final events
//
// The readable side is pull-based with its own queue: a consumer that falls behind gets the newest partial of a
// segment (older queued partials of that segment are replaced), and every final, in order. The writable side
// gives its source backpressure: a write is acknowledged once the steps it completed have run, so a file is
// consumed as fast as the engine allows and gives the same events as a paced source.
import { createReadStream } from 'node:fs';
import { Duplex, Readable, Writable, pipeline, type DuplexOptions } from 'node:stream';

import { abortError } from '../core/abort.js';
import { LiveRecognizer, type LiveEvent, type LiveOptions } from '../core/live.js';
import { loadModel, type LoadModelOptions, type Model } from '../core/model.js';
import { pickLoadOptions } from '../core/options.js';
import { RustAsrError } from '../errors.js';
import { DEFAULT_TARGET_RATE, Resampler } from '../stages/resample.js';
import type { RawAudioFormat } from '../audio/open.js';
import type { AudioChunk, AudioStreamFormat } from '../audio/types.js';
import { AudioDecoder } from '../stages/audio-decode.js';

export type { FinalEvent, LiveEvent, LiveOptions, LiveStepInfo, LiveStepStats, PartialEvent } from '../core/live.js';
export type { RawAudioFormat } from '../audio/open.js';

export interface ListenOptions extends LiveOptions, LoadModelOptions {
  /** A loaded Model (shared, not disposed), or a model directory / hub id loaded for this stream only. */
  model: Model | string;
  /**
   * What is written: 'bytes' audio file bytes of any supported format (detected by their magic bytes; see
   * docs/formats.md); 'wav' WAV bytes only; 'audio' objectMode `{ samples, sampleRate }` chunks of mono audio at
   * any rate. Default: the first chunk decides between 'bytes' and 'audio'.
   */
  input?: 'bytes' | 'wav' | 'audio';
  /** Headerless PCM bytes: rate, channels and sample encoding (as for transcriber()). */
  raw?: RawAudioFormat;
  /** The ffmpeg used for formats with no WebAssembly decoder (default $RUSTASR_FFMPEG, else PATH); false: none. */
  ffmpeg?: string | false;
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
  private audioFormat: AudioStreamFormat | null = null;
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
    if (input !== undefined && input !== 'bytes' && input !== 'wav' && input !== 'audio') {
      queueMicrotask(() => this.destroy(new RustAsrError('INVALID_OPTION', `input must be 'bytes', 'wav' or 'audio', got ${String(input)}`)));
    } else if (input !== undefined || opts.raw !== undefined) {
      const kind = input ?? 'bytes';
      this.inputKind = kind === 'audio' ? 'audio' : 'bytes';
      try {
        this.head = this.stages(kind);
      } catch (err) {
        queueMicrotask(() => this.destroy(err as Error));
      }
    }
  }

  /** Builds the stages before the recogniser (decode, resample to the model's rate); returns the first. */
  private stages(input: 'bytes' | 'wav' | 'audio'): Writable {
    const resampler = new Resampler();
    const stages: (Readable | Writable)[] = [];
    if (input === 'audio') {
      stages.push(resampler);
    } else {
      const o = this.opts;
      const dec = new AudioDecoder({ format: input === 'wav' ? 'wav' : 'auto', raw: o.raw, ffmpeg: o.ffmpeg, allowEmpty: true });
      dec.once('format', (f: AudioStreamFormat) => {
        this.audioFormat = f;
        this.emit('format', f);
      });
      stages.push(dec, resampler);
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

  /** The input's format once known (container, codec, rate, channels; null before, and for `input: 'audio'`). */
  get format(): AudioStreamFormat | null {
    return this.audioFormat;
  }

  private async prepare(): Promise<Model> {
    const o = this.opts;
    let model: Model;
    if (typeof o.model === 'string') {
      model = await loadModel(o.model, pickLoadOptions(o));
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
      this.head = this.stages(isBytes ? 'bytes' : 'audio');
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
 * arrives. A path is an audio file (any supported format); a stream or iterable is file bytes when its chunks
 * are bytes and audio when they are `{ samples, sampleRate }` objects, unless `input` says otherwise (raw PCM:
 * `raw: { sampleRate, channels, encoding }`).
 */
export function listen(source: LiveSource, opts: ListenOptions): LiveTranscriber {
  let src: Readable;
  const input = opts.input;
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
