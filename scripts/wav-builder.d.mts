// Types for scripts/wav-builder.mjs (used by the TypeScript tests).
export interface FmtOptions {
  formatTag?: number;
  channels?: number;
  sampleRate?: number;
  bits?: number;
  blockAlign?: number;
  extensible?: boolean;
}
export interface WavOptions extends FmtOptions {
  data?: Uint8Array;
  riffSize?: number;
  dataSize?: number;
  before?: Uint8Array[];
  after?: Uint8Array[];
  noFmt?: boolean;
  noData?: boolean;
  dataFirst?: boolean;
}
export function chunk(id: string, body: Uint8Array, size?: number): Uint8Array;
export function concatBytes(parts: Uint8Array[]): Uint8Array;
export function fmtBody(opts: FmtOptions): Uint8Array;
export function buildWav(opts: WavOptions): Uint8Array;
export function encodeSamples(samples: ArrayLike<number>, opts?: { bits?: number; float?: boolean }): Uint8Array;
export function wavFromSamples(
  samples: Float32Array,
  opts?: { sampleRate?: number; bits?: number; float?: boolean; channels?: number; extensible?: boolean },
): Uint8Array;
export function rng(seed: number): () => number;
