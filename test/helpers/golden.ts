// Access to the golden reference data (shared/golden): case list, case JSON and case tensors.
//
// Location: $RUSTASR_GOLDEN_DIR, else <repo root>/../shared/golden (resolved from this file, not the cwd).
// Layout: cases/index.json lists the cases; cases/<case>.json holds the scalars/ids, cases/<case>.safetensors
// the tensors; model_dir and audio paths in the JSON are relative to the golden root.

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (two levels above test/helpers/). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Root of the golden data set. */
export function goldenRoot(): string {
  const env = process.env['RUSTASR_GOLDEN_DIR'];
  if (env !== undefined && env !== '') return isAbsolute(env) ? env : resolve(REPO_ROOT, env);
  return resolve(REPO_ROOT, '..', 'shared', 'golden');
}

/** Absolute path of a file inside the golden root. */
export function goldenPath(...parts: string[]): string {
  return resolve(goldenRoot(), ...parts);
}

// ---------------------------------------------------------------------------------------------- types

/** One entry of cases/index.json. */
export interface GoldenIndexEntry {
  case: string;
  model: string;
  /** Relative to the golden root. */
  model_dir: string;
  /** Relative to the golden root. */
  audio: string;
  n_samples: number;
  mel_frames: number;
  n_audio_tokens: number;
  prompt_len: number;
  force_language: string | null;
  context: string;
  generated_ids: number[];
  min_margin: number;
  min_margin_over_logit_maxabs: number;
  safetensors_sha256: string;
}

export interface GoldenIndex {
  cases: GoldenIndexEntry[];
  tolerances: Record<string, unknown>;
}

export interface GoldenTensorDescription {
  shape: number[];
  dtype: string;
  layout?: string;
  [key: string]: unknown;
}

/** cases/<case>.json. Fields not listed are kept (index signature) but untyped. */
export interface GoldenCaseJson {
  case: string;
  split?: string;
  model: string;
  model_dir: string;
  audio: string;
  audio_sha256: string;
  n_samples: number;
  sample_rate: number;
  mel_frames: number;
  conv_chunks_mel_frames: number[];
  conv_chunk_tokens: number[];
  n_audio_tokens: number;
  encoder_attention_windows_cu_seqlens: number[];
  context: string;
  force_language: string | null;
  prompt_text_before_audio_expansion: string;
  input_ids: number[];
  prompt_len: number;
  audio_pad_token_id: number;
  audio_pad_start: number;
  audio_pad_count: number;
  greedy: {
    max_new_tokens: number;
    eos_stop: boolean;
    generated_ids: number[];
    generated_text_if_decoded?: string;
    margins_top1_minus_top2: number[];
    [key: string]: unknown;
  };
  tensors: Record<string, GoldenTensorDescription>;
  cross_checks?: unknown;
  tolerances: Record<string, unknown>;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------------------- safetensors

export type SafetensorsDtype = 'F32' | 'I64' | 'I32' | 'BF16' | 'F16' | 'F64' | 'U8' | 'I8' | 'I16' | 'BOOL';

export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDtype | string;
  shape: number[];
  /** Byte range relative to the start of the data section (after the header). */
  begin: number;
  end: number;
}

/**
 * A parsed safetensors file held in memory: 8-byte little-endian u64 header length N, N bytes of JSON
 * header ({name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?}), then the data section;
 * data_offsets are relative to the start of the data section.
 */
export class Safetensors {
  readonly metadata: Record<string, string>;
  private readonly entries = new Map<string, SafetensorsEntry>();
  private readonly dataStart: number;

  constructor(
    private readonly bytes: Uint8Array,
    readonly source = '<buffer>',
  ) {
    if (bytes.length < 8) throw new Error(`${source}: too short for a safetensors header`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headerLen = view.getBigUint64(0, true);
    if (headerLen > BigInt(bytes.length - 8)) throw new Error(`${source}: header length ${headerLen} exceeds file`);
    this.dataStart = 8 + Number(headerLen);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, this.dataStart))) as Record<string, unknown>;
    const dataLen = bytes.length - this.dataStart;
    this.metadata = {};
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') {
        this.metadata = (raw ?? {}) as Record<string, string>;
        continue;
      }
      const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const offs = e.data_offsets;
      if (
        typeof e.dtype !== 'string' ||
        !Array.isArray(e.shape) ||
        !Array.isArray(offs) ||
        offs.length !== 2 ||
        typeof offs[0] !== 'number' ||
        typeof offs[1] !== 'number' ||
        offs[0] > offs[1] ||
        offs[1] > dataLen
      ) {
        throw new Error(`${source}: bad header entry for ${name}`);
      }
      this.entries.set(name, { name, dtype: e.dtype, shape: e.shape as number[], begin: offs[0], end: offs[1] });
    }
  }

  static async open(path: string): Promise<Safetensors> {
    return new Safetensors(await readFile(path), path);
  }

  static openSync(path: string): Safetensors {
    return new Safetensors(readFileSync(path), path);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.source}: no tensor ${JSON.stringify(name)} (have ${this.names().join(', ')})`);
    return e;
  }

  /** Raw little-endian bytes of a tensor (a view, not a copy). */
  raw(name: string): Uint8Array {
    const e = this.info(name);
    return this.bytes.subarray(this.dataStart + e.begin, this.dataStart + e.end);
  }

  private view(name: string, dtype: string, elemSize: number): { dv: DataView; n: number } {
    const e = this.info(name);
    if (e.dtype !== dtype) throw new Error(`${this.source}: tensor ${name} is ${e.dtype}, not ${dtype}`);
    const b = this.raw(name);
    const n = e.shape.reduce((a, d) => a * d, 1);
    if (b.length !== n * elemSize) throw new Error(`${this.source}: tensor ${name} has ${b.length} bytes for shape [${e.shape.join(', ')}]`);
    return { dv: new DataView(b.buffer, b.byteOffset, b.byteLength), n };
  }

  /** An F32 tensor, flattened row-major. */
  f32(name: string): Float32Array {
    const { dv, n } = this.view(name, 'F32', 4);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
    return out;
  }

  /** A BF16 tensor upcast (exactly) to float32, flattened row-major. */
  bf16(name: string): Float32Array {
    const { dv, n } = this.view(name, 'BF16', 2);
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) bits[i] = dv.getUint16(i * 2, true) << 16;
    return new Float32Array(bits.buffer);
  }

  /** An I64 tensor as BigInt64Array. */
  i64(name: string): BigInt64Array {
    const { dv, n } = this.view(name, 'I64', 8);
    const out = new BigInt64Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getBigInt64(i * 8, true);
    return out;
  }

  /** An I64 tensor as numbers (throws if a value is outside the safe-integer range). */
  i64Numbers(name: string): number[] {
    return Array.from(this.i64(name), (v) => {
      const x = Number(v);
      if (!Number.isSafeInteger(x)) throw new Error(`${this.source}: ${name} value ${v} is not a safe integer`);
      return x;
    });
  }
}

// --------------------------------------------------------------------------------------------- cases

let indexCache: GoldenIndex | undefined;
let indexCacheRoot: string | undefined;

/** cases/index.json (cached per golden root). */
export function loadIndex(): GoldenIndex {
  const root = goldenRoot();
  if (!indexCache || indexCacheRoot !== root) {
    const file = resolve(root, 'cases', 'index.json');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`golden data not found at ${file} (set RUSTASR_GOLDEN_DIR): ${(err as Error).message}`);
    }
    indexCache = JSON.parse(text) as GoldenIndex;
    indexCacheRoot = root;
  }
  return indexCache;
}

/** The case names listed in cases/index.json, in file order. Synchronous so it can drive `it.each`. */
export function listCases(): string[] {
  return loadIndex().cases.map((c) => c.case);
}

/** The index entries (name, model, audio, ...) of every case. */
export function listCaseEntries(): GoldenIndexEntry[] {
  return loadIndex().cases;
}

export interface GoldenTensor {
  dtype: string;
  shape: number[];
}

export interface GoldenCase {
  name: string;
  json: GoldenCaseJson;
  /** Absolute path of the model directory the case was produced with. */
  modelDir: string;
  /** Absolute path of the case's WAV file. */
  audioPath: string;
  /** Absolute path of cases/<case>.safetensors. */
  safetensorsPath: string;
  /** Tensor names in the safetensors file. */
  tensorNames(): string[];
  /** dtype and shape of a tensor. */
  tensorInfo(name: string): GoldenTensor;
  /** An F32 tensor, flattened row-major. */
  f32(name: string): Float32Array;
  /** An I64 tensor as BigInt64Array. */
  i64(name: string): BigInt64Array;
  /** An I64 tensor as number[]. */
  ids(name: string): number[];
}

/** Loads cases/<name>.json; tensors are read from cases/<name>.safetensors on first use. */
export async function loadCase(name: string): Promise<GoldenCase> {
  const root = goldenRoot();
  const jsonPath = resolve(root, 'cases', `${name}.json`);
  const json = JSON.parse(await readFile(jsonPath, 'utf8')) as GoldenCaseJson;
  const safetensorsPath = resolve(root, 'cases', `${name}.safetensors`);
  let st: Safetensors | undefined;
  const file = (): Safetensors => (st ??= Safetensors.openSync(safetensorsPath));
  return {
    name,
    json,
    modelDir: resolve(root, json.model_dir),
    audioPath: resolve(root, json.audio),
    safetensorsPath,
    tensorNames: () => file().names(),
    tensorInfo: (t) => {
      const e = file().info(t);
      return { dtype: e.dtype, shape: [...e.shape] };
    },
    f32: (t) => file().f32(t),
    i64: (t) => file().i64(t),
    ids: (t) => file().i64Numbers(t),
  };
}

// ------------------------------------------------------------------------------------- aligner cases

/** One case of aligner/<case>.json (Qwen3-ForcedAligner, computed with the official code). */
export interface AlignerCaseJson {
  case: string;
  model_dir: string;
  audio: string;
  text: string;
  language: string;
  word_units: string[];
  aligner_input_text_before_audio_expansion: string;
  input_ids: number[];
  audio_pad_start: number;
  audio_pad_count: number;
  timestamp_positions: number[];
  argmax_classes: number[];
  timestamps_ms_raw: number[];
  timestamps_ms_fixed: number[];
  items: { text: string; start_time: number; end_time: number }[];
  [key: string]: unknown;
}

export interface AlignerCase {
  name: string;
  json: AlignerCaseJson;
  modelDir: string;
  audioPath: string;
  /** Tolerances of aligner/index.json. */
  tolerances: Record<string, unknown>;
  f32(name: string): Float32Array;
  ids(name: string): number[];
}

function alignerIndex(): { cases: { case: string }[]; tolerances: Record<string, unknown> } {
  return JSON.parse(readFileSync(resolve(goldenRoot(), 'aligner', 'index.json'), 'utf8')) as {
    cases: { case: string }[];
    tolerances: Record<string, unknown>;
  };
}

/** The case names of aligner/index.json, in file order. */
export function listAlignerCases(): string[] {
  return alignerIndex().cases.map((c) => c.case);
}

/** Loads aligner/<name>.json; tensors come from aligner/<name>.safetensors on first use. */
export async function loadAlignerCase(name: string): Promise<AlignerCase> {
  const root = goldenRoot();
  const json = JSON.parse(await readFile(resolve(root, 'aligner', `${name}.json`), 'utf8')) as AlignerCaseJson;
  let st: Safetensors | undefined;
  const file = (): Safetensors => (st ??= Safetensors.openSync(resolve(root, 'aligner', `${name}.safetensors`)));
  return {
    name,
    json,
    modelDir: resolve(root, json.model_dir),
    audioPath: resolve(root, json.audio),
    tolerances: alignerIndex().tolerances,
    f32: (t) => file().f32(t),
    ids: (t) => file().i64Numbers(t),
  };
}
