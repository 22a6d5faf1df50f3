// Audio types shared by the decoders (src/audio/) and the stream stages (src/stages/).

/** A chunk of mono float samples, as the decoding stages emit them and the Resampler / Segmenter consume them. */
export interface AudioChunk {
  /** Mono samples, nominally in [-1, 1]. */
  samples: Float32Array;
  /** Samples per second. */
  sampleRate: number;
}

/** Decoded audio: planar channels (one Float32Array per channel, equal lengths) at the source's rate. */
export interface PlanarAudio {
  channels: Float32Array[];
  sampleRate: number;
}

/**
 * What a decoder found at the start of a stream ('format' event of AudioDecoder / WavDecoder). WAV inputs
 * also carry the fmt chunk's fields (bitsPerSample, encoding, formatTag).
 */
export interface AudioStreamFormat {
  /** Container and codec, e.g. 'wav/pcm', 'wav/mulaw', 'rf64/pcm', 'mp3', 'flac', 'ogg/opus', 'webm/opus', 'raw/s16le'. */
  format: string;
  sampleRate: number;
  channels: number;
  /** WAV and raw PCM: bits per coded sample (4 for IMA ADPCM, 8 for G.711). */
  bitsPerSample?: number;
  /** WAV and raw PCM: the sample encoding. */
  encoding?: SampleEncoding;
  /** WAV: the effective format tag (for WAVE_FORMAT_EXTENSIBLE, the first two bytes of the SubFormat GUID). */
  formatTag?: number;
}

/** Sample encodings of WAV data chunks and raw PCM. */
export type SampleEncoding = 'pcm' | 'float' | 'mulaw' | 'alaw' | 'ima-adpcm';
