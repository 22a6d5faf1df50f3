// The decoding stage: audio file bytes in (any supported format, detected by its magic bytes, or raw PCM
// described by the caller), AudioChunks out. Used by transcriber()/recognize()/transcribe() and decodeAudio(),
// and the stage a live source would feed.
//
// Memory stays bounded by the stream's high-water marks whatever the write sizes: a decoder yields its
// output lazily, one block (at most 65,536 frames, or one 16 KiB slice of compressed input) at a time, and
// the stage stops pulling blocks while its readable side is full, resuming when the reader asks for more.
// So a 200 MB WAV written in one `end(buf)` is converted to float one block at a time, as it is consumed.
import { Transform, type TransformCallback, type TransformOptions } from 'node:stream';

import type { BlockSource, DecodedBlock, FormatDecoder } from '../audio/decoder.js';
import { MAX_SNIFF_BYTES, sniff } from '../audio/detect.js';
import { RustAsrError } from '../errors.js';
import { openDecoder, rawStreamFormat, unknownFormatError, type RawAudioFormat } from '../audio/open.js';
import type { AudioChunk, AudioStreamFormat, PlanarAudio } from '../audio/types.js';
import { WavReader } from '../audio/wav.js';
import type { WavCodecFormat } from '../audio/wav-format.js';

export interface AudioDecoderOptions extends Omit<TransformOptions, 'objectMode' | 'readableObjectMode' | 'writableObjectMode'> {
  /**
   * The input's format: 'auto' (default) detects it from its first bytes (WAV, MP3, FLAC, Ogg Vorbis/Opus/FLAC,
   * WebM/Opus; MP4/M4A, AAC, AIFF, ... through ffmpeg); 'wav' reads WAV only (INVALID_WAV otherwise).
   * Ignored when `raw` is given.
   */
  format?: 'auto' | 'wav';
  /** Headerless PCM: its rate, channels and sample encoding (every byte is sample data). */
  raw?: RawAudioFormat;
  /**
   * 'mono' (default): AudioChunks `{ samples, sampleRate }`, the mean of the channels; 'planar':
   * `{ channels: Float32Array[], sampleRate }` at the source's channel count.
   */
  output?: 'mono' | 'planar';
  /** The ffmpeg used for formats with no WebAssembly decoder (default: $RUSTASR_FFMPEG, else PATH); false: none. */
  ffmpeg?: string | false;
  /** The input's file path, when the bytes come from a file (lets ffmpeg read the file itself). */
  path?: string;
  /** An input that ends before any sample is not an error (EMPTY_AUDIO otherwise): live recognition's. */
  allowEmpty?: boolean;
}

/** The public part of a format (no decoder internals). */
function publicFormat(f: AudioStreamFormat): AudioStreamFormat {
  const out: AudioStreamFormat = { format: f.format, sampleRate: f.sampleRate, channels: f.channels };
  const w = f as Partial<WavCodecFormat>;
  if (w.bitsPerSample !== undefined) out.bitsPerSample = w.bitsPerSample;
  if (w.encoding !== undefined) out.encoding = w.encoding;
  if (w.formatTag !== undefined && w.formatTag !== 0) out.formatTag = w.formatTag;
  return out;
}

/**
 * A stream.Transform from audio file bytes (Buffer / Uint8Array chunks of any size, down to one byte) to
 * objectMode AudioChunks (or planar chunks with `output: 'planar'`), emitted as the input is decoded.
 * Emits 'format' (AudioStreamFormat, also `.format`) when the stream's format is known.
 *
 * Errors (RustAsrError): UNSUPPORTED_AUDIO_FORMAT for unrecognised input and formats nothing here reads
 * (naming the format, what is supported and how to convert); INVALID_WAV / UNSUPPORTED_WAV_FORMAT /
 * TRUNCATED_WAV for WAV files; INVALID_AUDIO for compressed data that does not decode; EMPTY_AUDIO when no
 * sample was decoded (and for empty input).
 */
export class AudioDecoder extends Transform {
  private decoder: FormatDecoder | undefined;
  private readonly opts: AudioDecoderOptions;
  private readonly mono: boolean;
  /** Bytes held while the format is being detected. */
  private head: Uint8Array[] = [];
  private headLen = 0;
  /** Bytes of an ID3 tag still to drop, and whether one was dropped. */
  private id3Left = 0;
  private afterId3 = false;
  private fmt: AudioStreamFormat | null = null;
  private work: { it: Iterator<DecodedBlock> | AsyncIterator<DecodedBlock>; done: (err?: Error | null) => void } | undefined;
  private pumping = false;
  private waiting = false;

  constructor(options: AudioDecoderOptions = {}) {
    const { format, raw, output, ffmpeg, path, allowEmpty, ...stream } = options;
    super({ ...stream, readableObjectMode: true, writableObjectMode: false });
    this.opts = { format, raw, output, ffmpeg, path, allowEmpty };
    this.mono = output !== 'planar';
    if (raw !== undefined) {
      this.decoder = new WavReader({ mono: this.mono, raw: rawStreamFormat(raw) });
    } else if (format === 'wav') {
      this.decoder = new WavReader({ mono: this.mono });
    }
  }

  /** The stream's format, or null until it is known. */
  get format(): AudioStreamFormat | null {
    return this.fmt;
  }

  override _transform(chunk: Buffer | Uint8Array, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      const bytes = this.route(chunk, false);
      if (bytes === undefined) callback();
      else this.run(this.decoder!.write(bytes), callback);
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    const callback: TransformCallback = (err, data) => {
      if (err && this.opts.allowEmpty && err instanceof RustAsrError && err.code === 'EMPTY_AUDIO') done();
      else done(err, data);
    };
    try {
      const bytes = this.decoder ? undefined : this.route(new Uint8Array(0), true);
      const d = this.decoder!;
      if (bytes !== undefined && bytes.length > 0) {
        this.run(d.write(bytes), (err) => (err ? callback(err) : this.run(d.end(), callback)));
      } else {
        this.run(d.end(), callback);
      }
    } catch (err) {
      callback(err as Error);
    }
  }

  override _read(size: number): void {
    if (this.waiting) {
      this.waiting = false;
      void this.pump();
    }
    super._read(size);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.decoder?.free();
    this.work = undefined;
    callback(err);
  }

  /**
   * Detection: holds bytes until the format is known, then creates the decoder. Returns the bytes the decoder
   * is to read now (undefined: none yet).
   */
  private route(chunk: Uint8Array, ended: boolean): Uint8Array | undefined {
    if (this.decoder) return chunk;
    let c = chunk;
    if (this.id3Left > 0) {
      const drop = Math.min(this.id3Left, c.length);
      this.id3Left -= drop;
      c = c.subarray(drop);
      if (c.length === 0 && !ended) return undefined;
    }
    if (c.length > 0) {
      this.head.push(c);
      this.headLen += c.length;
    }
    for (;;) {
      const all = this.headBytes();
      const r = sniff(all.subarray(0, MAX_SNIFF_BYTES), ended || all.length >= MAX_SNIFF_BYTES);
      if ('need' in r) return undefined;
      if ('id3' in r) {
        this.afterId3 = true;
        const drop = Math.min(r.id3, all.length);
        this.id3Left = r.id3 - drop;
        this.head = [all.subarray(drop)];
        this.headLen = all.length - drop;
        if (this.headLen === 0 && !ended) return undefined;
        continue;
      }
      if ('unknown' in r) {
        if (this.afterId3 && r.unknown === 'empty') throw unknownFormatError('an ID3 tag with no audio after it');
        throw unknownFormatError(r.unknown);
      }
      this.decoder = openDecoder(r, { mono: this.mono, ffmpeg: this.opts.ffmpeg, path: this.opts.path });
      this.head = [];
      this.headLen = 0;
      return all;
    }
  }

  private headBytes(): Uint8Array {
    if (this.head.length === 1) return this.head[0]!;
    const out = new Uint8Array(this.headLen);
    let at = 0;
    for (const h of this.head) {
      out.set(h, at);
      at += h.length;
    }
    this.head = [out];
    return out;
  }

  private run(src: BlockSource, done: (err?: Error | null) => void): void {
    const it = Symbol.asyncIterator in src ? (src as AsyncIterable<DecodedBlock>)[Symbol.asyncIterator]() : (src as Iterable<DecodedBlock>)[Symbol.iterator]();
    this.work = { it, done };
    void this.pump();
  }

  /** Pulls blocks from the current work and pushes them, until it is done or the readable side is full. */
  private async pump(): Promise<void> {
    const w = this.work;
    if (!w || this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        if (this.destroyed || this.work !== w) return;
        const next = w.it.next();
        const r = next instanceof Promise ? await next : next;
        if (this.destroyed || this.work !== w) return;
        this.noteFormat();
        if (r.done) {
          this.work = undefined;
          this.pumping = false;
          w.done();
          // Transform holds the write callback back while the readable side is full, and releases it from
          // _read; a _read that came while this work was held (and so resumed it) will not come again, so the
          // callback is released here. The next write then waits in its own held work: one write at most.
          super._read(0);
          return;
        }
        if (!this.push(this.chunkOf(r.value))) {
          this.waiting = true;
          return;
        }
      }
    } catch (err) {
      if (this.work === w) {
        this.work = undefined;
        this.pumping = false;
        w.done(err as Error);
      }
    } finally {
      this.pumping = false;
    }
  }

  private noteFormat(): void {
    if (this.fmt === null && this.decoder?.info) {
      this.fmt = publicFormat(this.decoder.info);
      this.emit('format', this.fmt);
    }
  }

  private chunkOf(b: DecodedBlock): AudioChunk | PlanarAudio {
    return this.mono ? { samples: b.channels[0]!, sampleRate: b.sampleRate } : { channels: b.channels, sampleRate: b.sampleRate };
  }
}

/** Creates an AudioDecoder: `pipeline(fs.createReadStream(file), audioDecoder(), sink)`. */
export function audioDecoder(options?: AudioDecoderOptions): AudioDecoder {
  return new AudioDecoder(options);
}
