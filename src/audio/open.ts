// Which decoder reads a detected format, raw PCM descriptions, and the "unsupported format" errors.
import { RustAsrError } from '../errors.js';
import { CompressedDecoder } from './codecs.js';
import type { DecoderOptions, FormatDecoder } from './decoder.js';
import { SUPPORTED_FORMATS, type Detected } from './detect.js';
import { FfmpegDecoder, findFfmpeg } from './ffmpeg.js';
import { WavReader } from './wav.js';
import { CONVERT_HINT, MAX_WAV_SAMPLE_RATE, type WavCodecFormat } from './wav-format.js';
import { WebmOpusDecoder } from './webm.js';

/** Sample encodings of raw (headerless) PCM input. */
export const RAW_ENCODINGS = ['s16le', 's24le', 's32le', 'f32le', 'u8', 'mulaw', 'alaw'] as const;
export type RawEncoding = (typeof RAW_ENCODINGS)[number];
/** Most channels a raw PCM description may declare. */
export const MAX_RAW_CHANNELS = 64;

/** Headerless PCM: what the bytes are (nothing in them says). */
export interface RawAudioFormat {
  /** Samples per second per channel (1 .. 384000). */
  sampleRate: number;
  /** Interleaved channels (1 .. 64). */
  channels: number;
  /** 's16le' | 's24le' | 's32le' | 'f32le' | 'u8' | 'mulaw' | 'alaw'. */
  encoding: RawEncoding;
}

/** Validates a raw PCM description (INVALID_OPTION naming the bad field) and returns its WAV-style format. */
export function rawStreamFormat(raw: unknown): WavCodecFormat {
  if (raw === null || typeof raw !== 'object') throw new RustAsrError('INVALID_OPTION', 'raw must be an object { sampleRate, channels, encoding }');
  const { sampleRate, channels, encoding } = raw as Partial<RawAudioFormat>;
  if (!Number.isInteger(sampleRate) || sampleRate! < 1 || sampleRate! > MAX_WAV_SAMPLE_RATE) {
    throw new RustAsrError('INVALID_OPTION', `raw sampleRate must be an integer from 1 to ${MAX_WAV_SAMPLE_RATE}, got ${String(sampleRate)}`);
  }
  if (!Number.isInteger(channels) || channels! < 1 || channels! > MAX_RAW_CHANNELS) {
    throw new RustAsrError('INVALID_OPTION', `raw channels must be an integer from 1 to ${MAX_RAW_CHANNELS}, got ${String(channels)}`);
  }
  if (!(RAW_ENCODINGS as readonly unknown[]).includes(encoding)) {
    throw new RustAsrError('INVALID_OPTION', `raw encoding must be one of ${RAW_ENCODINGS.join(', ')}, got ${String(encoding)}`);
  }
  const e = encoding as RawEncoding;
  const bits = e === 's16le' ? 16 : e === 's24le' ? 24 : e === 's32le' || e === 'f32le' ? 32 : 8;
  const kind = e === 'f32le' ? 'float' : e === 'mulaw' || e === 'alaw' ? e : 'pcm';
  return {
    format: `raw/${e}`,
    sampleRate: sampleRate!,
    channels: channels!,
    bitsPerSample: bits,
    encoding: kind,
    formatTag: 0,
    unitBytes: (bits / 8) * channels!,
    unitFrames: 1,
  };
}

export interface OpenOptions extends DecoderOptions {
  /** The ffmpeg to use for formats with no WebAssembly decoder (default: $RUSTASR_FFMPEG, else PATH); false: none. */
  ffmpeg?: string | false;
  /** The input's file path, when it is a file (ffmpeg then reads it directly). */
  path?: string;
}

/** Creates the decoder for a detected format; UNSUPPORTED_AUDIO_FORMAT when nothing here reads it. */
export function openDecoder(d: Detected, opts: OpenOptions): FormatDecoder {
  const base: DecoderOptions = { mono: opts.mono };
  switch (d.kind) {
    case 'wav':
      return new WavReader(base);
    case 'mp3':
    case 'flac':
    case 'ogg-flac':
    case 'ogg-vorbis':
    case 'ogg-opus':
      return new CompressedDecoder(d.kind, base);
    case 'webm':
      return new WebmOpusDecoder(base);
    default: {
      const ffmpeg = findFfmpeg(opts.ffmpeg);
      if (ffmpeg === undefined) {
        const why =
          d.kind === 'mp4' || d.kind === 'aac'
            ? ' (no well-kept JavaScript/WebAssembly AAC decoder with a license rustasr can ship exists)'
            : '';
        throw new RustAsrError(
          'UNSUPPORTED_AUDIO_FORMAT',
          `${d.name} input needs ffmpeg${why}, and none was found on PATH (or in $RUSTASR_FFMPEG); ` +
            `install ffmpeg, or ${CONVERT_HINT}. Read without ffmpeg: ${SUPPORTED_FORMATS.split(', and through')[0]}`,
        );
      }
      return new FfmpegDecoder(ffmpeg, d.name, { mono: opts.mono, path: opts.path });
    }
  }
}

/** The error for input that no decoder recognises. */
export function unknownFormatError(what: string): RustAsrError {
  if (what === 'empty') return new RustAsrError('EMPTY_AUDIO', 'no audio bytes (the input is empty)');
  return new RustAsrError(
    'UNSUPPORTED_AUDIO_FORMAT',
    `${what}; rustasr reads ${SUPPORTED_FORMATS} (headerless PCM needs a raw format: rate, channels, encoding); ${CONVERT_HINT}`,
  );
}
