// Compressed formats through the WebAssembly decoders of the wasm-audio-decoders family (mpg123, libFLAC,
// libvorbis, libopus compiled to WebAssembly, shipped inside their npm packages: no native build, no system
// tools). Each package is imported on first use, so a process that only reads WAV never compiles them.
// The choice is explained in docs/formats.md.
import { RustAsrError } from '../errors.js';
import { blocksOf, COMPRESSED_SLICE_BYTES, type DecodedBlock, type DecoderOptions, type FormatDecoder } from './decoder.js';
import type { AudioStreamFormat } from './types.js';

/** The shape the wasm-audio-decoders share. */
interface WasmResult {
  channelData: Float32Array[];
  samplesDecoded: number;
  sampleRate: number;
  /** FLAC: bits per sample of the stream. */
  bitDepth?: number;
  errors: { message: string; frameNumber?: number; inputBytes?: number }[];
}
interface WasmDecoder {
  ready: Promise<void>;
  decode(data: Uint8Array): WasmResult | Promise<WasmResult>;
  flush?(): Promise<WasmResult>;
  free(): void;
}

export type CompressedKind = 'mp3' | 'flac' | 'ogg-flac' | 'ogg-vorbis' | 'ogg-opus';

const FORMAT_NAMES: Record<CompressedKind, string> = {
  mp3: 'mp3',
  flac: 'flac',
  'ogg-flac': 'ogg/flac',
  'ogg-vorbis': 'ogg/vorbis',
  'ogg-opus': 'ogg/opus',
};

async function create(kind: CompressedKind): Promise<WasmDecoder> {
  switch (kind) {
    case 'mp3': {
      const { MPEGDecoder } = await import('mpg123-decoder');
      return new MPEGDecoder() as unknown as WasmDecoder;
    }
    case 'flac':
    case 'ogg-flac': {
      const { FLACDecoder } = await import('@wasm-audio-decoders/flac');
      return new FLACDecoder() as unknown as WasmDecoder;
    }
    case 'ogg-vorbis': {
      const { OggVorbisDecoder } = await import('@wasm-audio-decoders/ogg-vorbis');
      return new OggVorbisDecoder() as unknown as WasmDecoder;
    }
    case 'ogg-opus': {
      const { OggOpusDecoder } = await import('ogg-opus-decoder');
      return new OggOpusDecoder() as unknown as WasmDecoder;
    }
  }
}

/**
 * Zero bytes fed to the FLAC decoder before its flush. Its frame parser (codec-parser 2.5) finds the end of a
 * frame by the next frame's header, and at the end of the input it merged a short last frame into the one
 * before it, dropping the last frame's samples (3,410 of 81,234 in a 16 kHz file made by `flac`). With bytes
 * after the last frame, every frame is split at its real end; the zero bytes form no frame.
 */
const FLAC_END_PADDING = 64;

/** Message prefixes the decoders print with console.error on a bad frame (the same errors are in their results). */
const DECODER_LOG_PREFIXES = ['mpg123-decoder:', '@wasm-audio-decoders/flac:', 'libopus '];
let quietDepth = 0;
let realConsoleError: typeof console.error = console.error;

/**
 * Runs a decoder call with the decoders' own console.error lines filtered out: a library must not write on
 * its user's stderr, and the errors are reported through the decode results (INVALID_AUDIO when nothing
 * decodes). Other console.error calls meanwhile go through unchanged.
 */
export async function quietly<T>(f: () => T | Promise<T>): Promise<T> {
  if (quietDepth++ === 0) {
    realConsoleError = console.error;
    console.error = (...args: unknown[]) => {
      const first = args[0];
      if (typeof first === 'string' && DECODER_LOG_PREFIXES.some((p) => first.startsWith(p))) return;
      realConsoleError.apply(console, args);
    };
  }
  try {
    return await f();
  } finally {
    if (--quietDepth === 0) console.error = realConsoleError;
  }
}

/**
 * libFLAC's WebAssembly build hands out samples as v / (2^(bits-1) - 1); the lossless value is v / 2^(bits-1)
 * (as WAV readers and ffmpeg scale it). v is recovered exactly from the float32 up to 24 bits.
 */
function flacToExact(c: Float32Array, n: number, bits: number): Float32Array {
  const out = new Float32Array(n);
  const down = 2 ** (bits - 1) - 1;
  const up = 2 ** (bits - 1);
  for (let i = 0; i < n; i++) out[i] = Math.round(c[i]! * down) / up;
  return out;
}

/** Channels of an MPEG audio stream from its first frame header (mode 3 = single channel); undefined if unknown. */
function mpegChannels(b: Uint8Array): number | undefined {
  for (let i = 0; i + 4 <= b.length && i < 4096; i++) {
    if (b[i] === 0xff && (b[i + 1]! & 0xe0) === 0xe0 && ((b[i + 1]! >> 1) & 3) !== 0) return (b[i + 3]! >> 6) === 3 ? 1 : 2;
  }
  return undefined;
}

/** MP3, FLAC, Ogg FLAC, Ogg Vorbis and Ogg Opus, decoded by their WebAssembly decoders in 16 KiB slices. */
export class CompressedDecoder implements FormatDecoder {
  private decoder: WasmDecoder | undefined;
  private loading: Promise<WasmDecoder> | undefined;
  private freed = false;
  private frames = 0;
  private bytesIn = 0;
  private errors = 0;
  private firstError = '';
  private channels: number | undefined;
  private fmt: AudioStreamFormat | undefined;
  /** FLAC: the STREAMINFO total sample count (0: unknown), to cut what the padding might add. */
  private flacTotal = 0;
  private head = new Uint8Array(0);

  constructor(
    private readonly kind: CompressedKind,
    private readonly opts: DecoderOptions,
  ) {}

  get info(): AudioStreamFormat | undefined {
    return this.fmt;
  }

  private async ready(): Promise<WasmDecoder> {
    if (this.decoder) return this.decoder;
    this.loading ??= create(this.kind).then(async (d) => {
      await d.ready;
      if (this.freed) d.free();
      else this.decoder = d;
      return d;
    });
    return this.loading;
  }

  async *write(bytes: Uint8Array): AsyncGenerator<DecodedBlock> {
    this.bytesIn += bytes.length;
    if (this.head.length < 64 && bytes.length > 0) this.sniffHeader(bytes);
    const d = await this.ready();
    for (let at = 0; at < bytes.length; at += COMPRESSED_SLICE_BYTES) {
      if (this.freed) return;
      const slice = bytes.subarray(at, at + COMPRESSED_SLICE_BYTES);
      yield* this.take(await quietly(() => d.decode(slice)));
    }
  }

  async *end(): AsyncGenerator<DecodedBlock> {
    const d = await this.ready();
    if ((this.kind === 'flac' || this.kind === 'ogg-flac') && !this.freed) {
      yield* this.take(await quietly(() => d.decode(new Uint8Array(FLAC_END_PADDING))));
    }
    if (d.flush && !this.freed) yield* this.take(await quietly(() => d.flush!()));
    if (this.frames === 0) {
      throw new RustAsrError(
        'INVALID_AUDIO',
        `no ${FORMAT_NAMES[this.kind]} frame could be decoded from ${this.bytesIn} bytes` + (this.errors > 0 ? `: ${this.firstError}` : ''),
      );
    }
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.decoder?.free();
    this.decoder = undefined;
  }

  /** Reads what the decoders do not report: MP3 mono streams (decoded as two equal channels), FLAC's sample count. */
  private sniffHeader(bytes: Uint8Array): void {
    const h = new Uint8Array(Math.min(64, this.head.length + bytes.length));
    h.set(this.head.subarray(0, h.length));
    h.set(bytes.subarray(0, h.length - this.head.length), this.head.length);
    this.head = h;
    if (this.kind === 'mp3') this.channels ??= mpegChannels(bytes);
    if (this.kind === 'flac' && h.length >= 26 && h[0] === 0x66 && (h[4]! & 0x7f) === 0) {
      // fLaC, then the STREAMINFO block: total samples are the low 36 bits of bytes 21..25 (from the stream start).
      this.flacTotal = (h[21]! & 0x0f) * 2 ** 32 + ((h[22]! << 24) >>> 0) + (h[23]! << 16) + (h[24]! << 8) + h[25]!;
    }
  }

  private *take(r: WasmResult): Generator<DecodedBlock> {
    if (r.errors.length > 0) {
      if (this.errors === 0) this.firstError = r.errors[0]!.message;
      this.errors += r.errors.length;
    }
    let n = r.samplesDecoded;
    if (n === 0 || r.channelData.length === 0) return;
    if (this.flacTotal > 0) n = Math.max(0, Math.min(n, this.flacTotal - this.frames));
    if (n === 0) return;
    const keep = Math.min(r.channelData.length, this.channels ?? r.channelData.length);
    // The decoders reuse their output memory between calls: copy what is handed on.
    const flacBits = (this.kind === 'flac' || this.kind === 'ogg-flac') && r.bitDepth !== undefined && r.bitDepth <= 24 ? r.bitDepth : 0;
    const chans = r.channelData.slice(0, keep).map((c) => (flacBits ? flacToExact(c, n, flacBits) : c.slice(0, n)));
    if (!this.fmt) {
      this.fmt = { format: FORMAT_NAMES[this.kind], sampleRate: r.sampleRate, channels: keep };
    }
    this.frames += n;
    yield* blocksOf(chans, r.sampleRate, this.opts.mono);
  }
}
