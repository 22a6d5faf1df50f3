// Audio format detection by magic bytes (never by file name).
import { CONVERT_HINT } from './wav-format.js';

/** Formats the decoders read natively (no system tools). */
export type NativeFormat = 'wav' | 'mp3' | 'flac' | 'ogg-vorbis' | 'ogg-opus' | 'ogg-flac' | 'webm';

/** Formats recognised but decoded only through ffmpeg (when one is on PATH). */
export type FfmpegFormat = 'mp4' | 'aac' | 'aiff' | 'caf' | 'amr' | 'asf' | 'au' | 'ogg-speex';

export interface Detected {
  /** The decoder to use. */
  kind: NativeFormat | FfmpegFormat;
  /** The format in words, for messages ("MP4/M4A audio (AAC or ALAC)"). */
  name: string;
}

/** What sniff() needs: more bytes (or the end of the input), or an answer. */
/** `id3`: an ID3v2 tag of that many bytes comes first: skip it and sniff what follows. */
export type SniffResult = { need: number } | { id3: number } | Detected | { unknown: string };

/** Bytes sniff() may ask for at most before it decides (an Ogg page header with a full segment table). */
export const MAX_SNIFF_BYTES = 512;

const ascii = (b: Uint8Array, off: number, len: number): string => {
  let s = '';
  for (let i = off; i < off + len && i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
};

/** MPEG audio frame header at `off`: sync, a valid layer, bitrate and rate index. */
function isMpegFrame(b: Uint8Array, off: number): boolean {
  if (b.length < off + 4) return false;
  if (b[off] !== 0xff || (b[off + 1]! & 0xe0) !== 0xe0) return false;
  const version = (b[off + 1]! >> 3) & 3;
  const layer = (b[off + 1]! >> 1) & 3;
  const bitrate = b[off + 2]! >> 4;
  const rate = (b[off + 2]! >> 2) & 3;
  return version !== 1 && layer !== 0 && bitrate !== 15 && rate !== 3;
}

/** ADTS (raw AAC) header: 12-bit sync, layer 0. */
function isAdts(b: Uint8Array, off: number): boolean {
  return b.length >= off + 2 && b[off] === 0xff && (b[off + 1]! & 0xf6) === 0xf0;
}

function hex(b: Uint8Array): string {
  return Array.from(b.subarray(0, 8), (x) => x.toString(16).padStart(2, '0')).join(' ');
}

/**
 * Identifies the audio format from the first bytes of the input. `ended`: no more bytes will come (decide
 * with what is there). An ID3v2 tag is reported as `{ id3: bytes }` (it may hide an MP3, FLAC or AAC stream):
 * skip it and sniff again with `afterId3`.
 */
export function sniff(b: Uint8Array, ended: boolean, afterId3 = false): SniffResult {
  if (!ended && b.length < 10 && 'ID3'.startsWith(ascii(b, 0, Math.min(3, b.length)))) return { need: 10 };
  // ID3v2: "ID3", version, flags, a 28-bit syncsafe size (+ a 10-byte footer when flag 0x10 is set).
  if (b.length >= 10 && ascii(b, 0, 3) === 'ID3') {
    const size = ((b[6]! & 0x7f) << 21) | ((b[7]! & 0x7f) << 14) | ((b[8]! & 0x7f) << 7) | (b[9]! & 0x7f);
    return { id3: 10 + size + (b[5]! & 0x10 ? 10 : 0) };
  }
  const h = b;
  const need = (n: number): SniffResult | undefined => (h.length < n && !ended ? { need: n } : undefined);
  const w = need(12);
  if (w) return w;
  const tag4 = ascii(h, 0, 4);
  if ((tag4 === 'RIFF' || tag4 === 'RF64' || tag4 === 'BW64') && ascii(h, 8, 4) === 'WAVE') return { kind: 'wav', name: 'WAV' };
  if (tag4 === 'fLaC') return { kind: 'flac', name: 'FLAC' };
  if (tag4 === 'OggS') {
    // The first page holds the first packet of the first logical stream: its codec's identification header.
    const w2 = need(27);
    if (w2) return w2;
    const segs = h[26] ?? 0;
    const w3 = need(27 + segs + 8);
    if (w3) return w3;
    const p = 27 + segs;
    if (ascii(h, p, 8) === 'OpusHead') return { kind: 'ogg-opus', name: 'Ogg Opus' };
    if (h[p] === 1 && ascii(h, p + 1, 6) === 'vorbis') return { kind: 'ogg-vorbis', name: 'Ogg Vorbis' };
    if (ascii(h, p, 5) === '\x7fFLAC') return { kind: 'ogg-flac', name: 'Ogg FLAC' };
    if (ascii(h, p, 8) === 'Speex   ') return { kind: 'ogg-speex', name: 'Ogg Speex' };
    return { unknown: `an Ogg stream of an unsupported codec (first packet ${JSON.stringify(ascii(h, p, 8))})` };
  }
  if (h[0] === 0x1a && h[1] === 0x45 && h[2] === 0xdf && h[3] === 0xa3) return { kind: 'webm', name: 'WebM/Matroska' };
  if (ascii(h, 4, 4) === 'ftyp') return { kind: 'mp4', name: `MP4/M4A audio (brand ${JSON.stringify(ascii(h, 8, 4).trim())})` };
  if (tag4 === 'FORM' && (ascii(h, 8, 4) === 'AIFF' || ascii(h, 8, 4) === 'AIFC')) return { kind: 'aiff', name: ascii(h, 8, 4) };
  if (tag4 === 'caff') return { kind: 'caf', name: 'Core Audio Format (CAF)' };
  if (ascii(h, 0, 5) === '#!AMR') return { kind: 'amr', name: 'AMR' };
  if (tag4 === '.snd') return { kind: 'au', name: 'Sun/NeXT .au' };
  if (h[0] === 0x30 && h[1] === 0x26 && h[2] === 0xb2 && h[3] === 0x75) return { kind: 'asf', name: 'ASF/WMA' };
  // Frame-synced streams: two consecutive valid MPEG headers are not needed; one valid header at the start is
  // what every MP3 without an ID3 tag has.
  if (isAdts(h, 0)) return { kind: 'aac', name: 'AAC (ADTS)' };
  if (isMpegFrame(h, 0)) return { kind: 'mp3', name: 'MPEG audio (MP3)' };
  // A stream that ended inside a RIFF header: the WAV reader says how (TRUNCATED_WAV).
  if (ended && h.length >= 4 && h.length < 12 && (tag4 === 'RIFF' || tag4 === 'RF64' || tag4 === 'BW64')) return { kind: 'wav', name: 'WAV' };
  if (afterId3 && h.length > 0) return { kind: 'mp3', name: 'MPEG audio (MP3) after an ID3 tag' };
  if (h.length === 0) return { unknown: 'empty' };
  return { unknown: `not a recognised audio format (first bytes ${hex(h)}${/^[\x20-\x7e]{4}/.test(tag4) ? `, ${JSON.stringify(tag4)}` : ''})` };
}

/** What every "unsupported audio" message says is supported, and how to convert. */
export const SUPPORTED_FORMATS =
  'WAV (PCM, float, μ-law, A-law, IMA ADPCM; RIFF/RF64/BW64), MP3, FLAC, Ogg Vorbis, Ogg Opus, WebM/Opus, raw PCM (with a raw format), ' +
  'and through ffmpeg when it is on PATH: MP4/M4A/AAC, AIFF, CAF, AMR, WMA, .au';
export const CONVERT = CONVERT_HINT;
