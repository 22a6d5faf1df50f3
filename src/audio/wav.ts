// WAV (RIFF/WAVE) parsing for whole buffers: PCM 8/16/24/32-bit, IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE,
// any channel count (down-mixed by the mean, as the official pipeline does). The fmt-chunk and sample
// decoding rules are shared with the streaming decoder in src/stages/wav-decode.ts.
import { RustAsrError } from '../errors.js';
import { decodeFrames, frameBytesOf, MAX_WAV_SAMPLE_RATE, parseFmtChunk, validateWavFmt, type RawWavFmt } from '../stages/wav-decode.js';

export interface WavInfo {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  format: 'pcm' | 'float';
  /** Frames (samples per channel) in the data chunk. */
  frames: number;
}

/** Parses a complete WAV file and returns its samples down-mixed to mono float32 in [-1, 1]. */
export function decodeWav(buf: Uint8Array): { info: WavInfo; samples: Float32Array } {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const tag = (off: number) => String.fromCharCode(buf[off]!, buf[off + 1]!, buf[off + 2]!, buf[off + 3]!);
  if (buf.length < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') {
    throw new RustAsrError('INVALID_WAV', 'not a WAV file (no RIFF/WAVE header)');
  }
  let off = 12;
  let rawFmt: RawWavFmt | undefined;
  let data: Uint8Array | undefined;
  while (off + 8 <= buf.length) {
    const id = tag(off);
    const size = view.getUint32(off + 4, true);
    const body = off + 8;
    if (id === 'fmt ') {
      rawFmt = parseFmtChunk(buf.subarray(body, Math.min(body + Math.min(size, 40), buf.length)), size);
    } else if (id === 'data') {
      if (!rawFmt) throw new RustAsrError('INVALID_WAV', 'data chunk before fmt chunk');
      const end = Math.min(body + size, buf.length);
      if (body + size > buf.length) {
        // A stream whose RIFF sizes were never patched (0 or 0xFFFFFFFF) is common; a short file is not.
        if (size !== 0xffffffff && size !== 0) {
          throw new RustAsrError('TRUNCATED_WAV', `data chunk declares ${size} bytes but only ${buf.length - body} remain`);
        }
      }
      data = buf.subarray(body, size === 0 ? buf.length : end);
      break;
    }
    off = body + size + (size & 1);
  }
  if (!rawFmt) throw new RustAsrError('INVALID_WAV', 'no fmt chunk');
  if (!data) throw new RustAsrError('INVALID_WAV', 'no data chunk');
  const fmt = validateWavFmt(rawFmt, MAX_WAV_SAMPLE_RATE);
  const frames = Math.floor(data.length / frameBytesOf(fmt));
  if (frames === 0) throw new RustAsrError('EMPTY_AUDIO', 'the WAV data chunk holds no samples');
  const samples = new Float32Array(frames);
  decodeFrames(data, 0, frames, fmt, samples, 0, 0);
  return {
    info: { sampleRate: fmt.sampleRate, channels: fmt.channels, bitsPerSample: fmt.bitsPerSample, format: fmt.encoding, frames },
    samples,
  };
}
