// Synthetic Qwen3-ASR checkpoints: the real config and tokenizer files with random BF16 weights of the real
// shapes and official tensor names, for benchmarks (compute cost does not depend on the weight values).
// Weights are deterministic for a seed, scaled so activations stay finite through every layer.
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { RustAsrError } from '../errors.js';
import { writeSafetensors, type TensorSource, type WriteProgress } from './safetensors-writer.js';

export type SynthVariant = '0.6b' | '1.7b';
export const SYNTH_VARIANTS: readonly SynthVariant[] = ['0.6b', '1.7b'];

/** The audio-encoder dimensions, named as in config.json's thinker_config.audio_config. */
export interface AudioDims {
  num_mel_bins: number;
  d_model: number;
  encoder_layers: number;
  encoder_attention_heads: number;
  encoder_ffn_dim: number;
  downsample_hidden_size: number;
  output_dim: number;
}

/** The text-decoder dimensions, named as in config.json's thinker_config.text_config. */
export interface TextDims {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  vocab_size: number;
}

export interface ModelDims {
  audio: AudioDims;
  text: TextDims;
}

export interface DimsOverride {
  audio?: Partial<AudioDims>;
  text?: Partial<TextDims>;
}

/** Published dimensions of the two Qwen3-ASR sizes (0.6B as in the real config.json). */
export const VARIANT_DIMS: Readonly<Record<SynthVariant, ModelDims>> = {
  '0.6b': {
    audio: {
      num_mel_bins: 128,
      d_model: 896,
      encoder_layers: 18,
      encoder_attention_heads: 14,
      encoder_ffn_dim: 3584,
      downsample_hidden_size: 480,
      output_dim: 1024,
    },
    text: {
      hidden_size: 1024,
      intermediate_size: 3072,
      num_hidden_layers: 28,
      num_attention_heads: 16,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 151936,
    },
  },
  '1.7b': {
    audio: {
      num_mel_bins: 128,
      d_model: 1024,
      encoder_layers: 24,
      encoder_attention_heads: 16,
      encoder_ffn_dim: 4096,
      downsample_hidden_size: 480,
      output_dim: 2048,
    },
    text: {
      hidden_size: 2048,
      intermediate_size: 6144,
      num_hidden_layers: 28,
      num_attention_heads: 16,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 151936,
    },
  },
};

/** Copied verbatim from the base directory: the required ones (with config.json) must exist, the others when present. */
export const REQUIRED_FILES = ['vocab.json', 'merges.txt', 'tokenizer_config.json'] as const;
export const OPTIONAL_FILES = [
  'chat_template.json',
  'preprocessor_config.json',
  'generation_config.json',
  'tokenizer.json',
  'special_tokens_map.json',
] as const;

/** How a tensor's values are drawn. */
export type InitKind =
  /** Normal-ish, mean 0, std 1/sqrt(fan_in) with fan_in the product of every dim after the first. */
  | 'matrix'
  /** Normal-ish around 1 (std 0.02): LayerNorm / RMSNorm scales. */
  | 'norm'
  /** Normal-ish around 0 (std 0.02). */
  | 'bias';

export interface TensorSpec {
  name: string;
  shape: number[];
  init: InitKind;
}

export interface SynthOptions {
  variant: SynthVariant;
  /** Output directory (created if missing; existing files of the same names are replaced). */
  out: string;
  /** PRNG seed (default 0): the same seed, variant and dims give byte-identical files. */
  seed?: number;
  /** Also write thinker.lm_head.weight (own random values). config.json keeps tie_word_embeddings as it is. */
  untied?: boolean;
  /** Directory with the real config.json and tokenizer files (default: $RUSTASR_MODEL_FILES_DIR, else
   * <repo>/../shared/models/qwen3-asr-0.6b). */
  baseDir?: string;
  /** Testing: dims patched over the variant's (e.g. a tiny model). Changing head_dim rescales mrope_section. */
  dims?: DimsOverride;
  /** Testing: staging buffer size of the writer (the output does not depend on it). */
  bufferBytes?: number;
  onProgress?: (p: WriteProgress) => void;
}

export interface SynthResult {
  dir: string;
  modelPath: string;
  /** model.safetensors size in bytes. */
  bytes: number;
  tensors: number;
  params: number;
  dims: ModelDims;
  /** Wall time of the whole call. */
  ms: number;
}

// ---------------------------------------------------------------------------------------------------------
// Tensor list

/** Every tensor of the official checkpoint layout for these dims, in a model-order (audio tower, then decoder). */
export function checkpointTensors(dims: ModelDims, opts: { untied?: boolean } = {}): TensorSpec[] {
  const { audio: a, text: t } = dims;
  const C = a.downsample_hidden_size;
  const d = a.d_model;
  const specs: TensorSpec[] = [];
  const add = (name: string, shape: number[], init: InitKind) => specs.push({ name, shape, init });

  const at = 'thinker.audio_tower.';
  add(`${at}conv2d1.weight`, [C, 1, 3, 3], 'matrix');
  add(`${at}conv2d1.bias`, [C], 'bias');
  add(`${at}conv2d2.weight`, [C, C, 3, 3], 'matrix');
  add(`${at}conv2d2.bias`, [C], 'bias');
  add(`${at}conv2d3.weight`, [C, C, 3, 3], 'matrix');
  add(`${at}conv2d3.bias`, [C], 'bias');
  add(`${at}conv_out.weight`, [d, C * (a.num_mel_bins / 8)], 'matrix');
  for (let i = 0; i < a.encoder_layers; i++) {
    const p = `${at}layers.${i}.`;
    for (const proj of ['q', 'k', 'v', 'out']) {
      add(`${p}self_attn.${proj}_proj.weight`, [d, d], 'matrix');
      add(`${p}self_attn.${proj}_proj.bias`, [d], 'bias');
    }
    add(`${p}self_attn_layer_norm.weight`, [d], 'norm');
    add(`${p}self_attn_layer_norm.bias`, [d], 'bias');
    add(`${p}final_layer_norm.weight`, [d], 'norm');
    add(`${p}final_layer_norm.bias`, [d], 'bias');
    add(`${p}fc1.weight`, [a.encoder_ffn_dim, d], 'matrix');
    add(`${p}fc1.bias`, [a.encoder_ffn_dim], 'bias');
    add(`${p}fc2.weight`, [d, a.encoder_ffn_dim], 'matrix');
    add(`${p}fc2.bias`, [d], 'bias');
  }
  add(`${at}ln_post.weight`, [d], 'norm');
  add(`${at}ln_post.bias`, [d], 'bias');
  add(`${at}proj1.weight`, [d, d], 'matrix');
  add(`${at}proj1.bias`, [d], 'bias');
  add(`${at}proj2.weight`, [a.output_dim, d], 'matrix');
  add(`${at}proj2.bias`, [a.output_dim], 'bias');

  const h = t.hidden_size;
  const qDim = t.num_attention_heads * t.head_dim;
  const kvDim = t.num_key_value_heads * t.head_dim;
  const mp = 'thinker.model.';
  add(`${mp}embed_tokens.weight`, [t.vocab_size, h], 'matrix');
  for (let i = 0; i < t.num_hidden_layers; i++) {
    const p = `${mp}layers.${i}.`;
    add(`${p}input_layernorm.weight`, [h], 'norm');
    add(`${p}self_attn.q_proj.weight`, [qDim, h], 'matrix');
    add(`${p}self_attn.k_proj.weight`, [kvDim, h], 'matrix');
    add(`${p}self_attn.v_proj.weight`, [kvDim, h], 'matrix');
    add(`${p}self_attn.o_proj.weight`, [h, qDim], 'matrix');
    add(`${p}self_attn.q_norm.weight`, [t.head_dim], 'norm');
    add(`${p}self_attn.k_norm.weight`, [t.head_dim], 'norm');
    add(`${p}post_attention_layernorm.weight`, [h], 'norm');
    add(`${p}mlp.gate_proj.weight`, [t.intermediate_size, h], 'matrix');
    add(`${p}mlp.up_proj.weight`, [t.intermediate_size, h], 'matrix');
    add(`${p}mlp.down_proj.weight`, [h, t.intermediate_size], 'matrix');
  }
  add(`${mp}norm.weight`, [h], 'norm');
  if (opts.untied) add('thinker.lm_head.weight', [t.vocab_size, h], 'matrix');
  return specs;
}

// ---------------------------------------------------------------------------------------------------------
// Values

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** float -> bfloat16 bits, round to nearest even (finite inputs). */
export function toBf16(x: number): number {
  F32[0] = x;
  const bits = U32[0]!;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 bits -> float. */
export function fromBf16(b: number): number {
  U32[0] = (b & 0xffff) << 16;
  return F32[0]!;
}

// Normal-ish variate: the sum of the four bytes of one 32-bit xorshift output (Irwin-Hall over 4 discrete uniforms),
// mean 510, variance 4 * (256^2 - 1) / 12; bounded at about +-3.45 sigma, so no outliers can overflow anything.
const SUM_MEAN = 510;
const SUM_STD = Math.sqrt((4 * (256 * 256 - 1)) / 12);

/** BF16 bits for each of the 1021 possible byte sums, mapped to mean + std * z. */
function bf16Table(mean: number, std: number): Uint16Array {
  const lut = new Uint16Array(1021);
  for (let s = 0; s < lut.length; s++) lut[s] = toBf16(mean + (std * (s - SUM_MEAN)) / SUM_STD);
  return lut;
}

/** 32-bit FNV-1a of a string. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A well-mixed nonzero 32-bit xorshift state from the seed and the tensor name (murmur3 finaliser). */
function tensorState(seed: number, name: string): number {
  let h = (fnv1a(name) ^ Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.floor(seed / 0x100000000)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h === 0 ? 0x6d2b79f5 : h;
}

export function initStd(spec: TensorSpec): number {
  if (spec.init !== 'matrix') return 0.02;
  let fanIn = 1;
  for (const d of spec.shape.slice(1)) fanIn *= d;
  return 1 / Math.sqrt(fanIn);
}

/** A filler producing the tensor's BF16 values; its output depends only on (seed, name, init, shape). */
export function bf16Filler(spec: TensorSpec, seed: number): (chunk: Uint8Array, offset: number) => void {
  const lut = bf16Table(spec.init === 'norm' ? 1 : 0, initStd(spec));
  let x = tensorState(seed, spec.name) | 0;
  let next = 0; // byte offset the PRNG stream is at
  return (chunk, offset) => {
    if (offset !== next) throw new Error(`${spec.name}: out-of-order fill at byte ${offset}, expected ${next}`);
    const out = new Uint16Array(chunk.buffer, chunk.byteOffset, chunk.byteLength >>> 1);
    const n = out.length;
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = lut[(x & 255) + ((x >>> 8) & 255) + ((x >>> 16) & 255) + (x >>> 24)]!;
    }
    next += chunk.byteLength;
  };
}

// ---------------------------------------------------------------------------------------------------------
// Config

type Json = Record<string, unknown>;

function obj(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new RustAsrError('INVALID_CONFIG', `base config.json: ${what} is not an object`);
  }
  return v as Json;
}

function num(o: Json, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    throw new RustAsrError('INVALID_CONFIG', `base config.json: ${what}.${key} is not a positive integer`);
  }
  return v;
}

/** The dims stored in a config.json object. */
export function dimsOfConfig(config: unknown): ModelDims {
  const thinker = obj(obj(config, 'top level').thinker_config, 'thinker_config');
  const ac = obj(thinker.audio_config, 'thinker_config.audio_config');
  const tc = obj(thinker.text_config, 'thinker_config.text_config');
  const A = 'audio_config';
  const T = 'text_config';
  return {
    audio: {
      num_mel_bins: num(ac, 'num_mel_bins', A),
      d_model: num(ac, 'd_model', A),
      encoder_layers: num(ac, 'encoder_layers', A),
      encoder_attention_heads: num(ac, 'encoder_attention_heads', A),
      encoder_ffn_dim: num(ac, 'encoder_ffn_dim', A),
      downsample_hidden_size: num(ac, 'downsample_hidden_size', A),
      output_dim: num(ac, 'output_dim', A),
    },
    text: {
      hidden_size: num(tc, 'hidden_size', T),
      intermediate_size: num(tc, 'intermediate_size', T),
      num_hidden_layers: num(tc, 'num_hidden_layers', T),
      num_attention_heads: num(tc, 'num_attention_heads', T),
      num_key_value_heads: num(tc, 'num_key_value_heads', T),
      head_dim: num(tc, 'head_dim', T),
      vocab_size: num(tc, 'vocab_size', T),
    },
  };
}

function checkDims(d: ModelDims): void {
  const fail = (msg: string): never => {
    throw new RustAsrError('INVALID_OPTION', `synth dims: ${msg}`);
  };
  for (const [group, g] of Object.entries(d) as [string, Record<string, number>][]) {
    for (const [k, v] of Object.entries(g)) {
      if (!Number.isSafeInteger(v) || v <= 0) fail(`${group}.${k} must be a positive integer, got ${String(v)}`);
    }
  }
  if (d.audio.num_mel_bins % 8 !== 0) fail('audio.num_mel_bins must be divisible by 8');
  if (d.audio.d_model % d.audio.encoder_attention_heads !== 0) fail('audio.encoder_attention_heads must divide d_model');
  if (d.audio.output_dim !== d.text.hidden_size) fail('audio.output_dim must equal text.hidden_size');
  if (d.text.num_attention_heads % d.text.num_key_value_heads !== 0) {
    fail('text.num_key_value_heads must divide num_attention_heads');
  }
  if (d.text.head_dim % 2 !== 0) fail('text.head_dim must be even');
}

/** The base config with `dims` written in (a deep copy; the base object is not modified). */
export function patchConfig(base: unknown, dims: ModelDims): Json {
  const config = structuredClone(base) as Json;
  const thinker = obj(config.thinker_config, 'thinker_config');
  const ac = obj(thinker.audio_config, 'thinker_config.audio_config');
  const tc = obj(thinker.text_config, 'thinker_config.text_config');
  const oldHeadDim = tc.head_dim;
  Object.assign(ac, dims.audio);
  ac.num_hidden_layers = dims.audio.encoder_layers; // transformers mirrors encoder_layers here
  Object.assign(tc, dims.text);
  const rope = tc.rope_scaling;
  if (oldHeadDim !== dims.text.head_dim && typeof rope === 'object' && rope !== null && 'mrope_section' in rope) {
    // mrope_section splits head_dim / 2 rotary pairs into (temporal, height, width); keep the 24:20:20 shape.
    const half = dims.text.head_dim / 2;
    const hw = Math.floor((half * 20) / 64);
    (rope as Json).mrope_section = [half - 2 * hw, hw, hw];
  }
  return config;
}

// ---------------------------------------------------------------------------------------------------------
// Paths

/** The repository root: the nearest ancestor of this module with the rustasr package.json. */
function repoRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'rustasr') return dir;
      } catch {
        // not ours; keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** Where the real config/tokenizer files are read from when no baseDir is given. */
export function defaultBaseDir(): string {
  const env = process.env.RUSTASR_MODEL_FILES_DIR;
  if (env) return resolve(env);
  const root = repoRoot() ?? process.cwd();
  return resolve(root, '..', 'shared', 'models', 'qwen3-asr-0.6b');
}

// ---------------------------------------------------------------------------------------------------------
// Entry point

/** The dims a synthCheckpoint call with these options produces. */
export function resolveDims(variant: SynthVariant, override: DimsOverride = {}): ModelDims {
  const v = VARIANT_DIMS[variant];
  if (!v) throw new RustAsrError('INVALID_OPTION', `variant must be one of ${SYNTH_VARIANTS.join(', ')}, got ${String(variant)}`);
  const dims: ModelDims = { audio: { ...v.audio, ...override.audio }, text: { ...v.text, ...override.text } };
  checkDims(dims);
  return dims;
}

/**
 * Writes a synthetic checkpoint directory: config.json (the base config with the variant's dims), the base
 * tokenizer/processor/generation files, and model.safetensors with every tensor of the official layout, BF16.
 */
export async function synthCheckpoint(opts: SynthOptions): Promise<SynthResult> {
  const t0 = performance.now();
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new RustAsrError('INVALID_OPTION', `seed must be a non-negative integer, got ${String(seed)}`);
  }
  const dims = resolveDims(opts.variant, opts.dims);
  const baseDir = resolve(opts.baseDir ?? defaultBaseDir());
  const out = resolve(opts.out);

  const configPath = join(baseDir, 'config.json');
  let baseText: string;
  try {
    baseText = await readFile(configPath, 'utf8');
  } catch {
    throw new RustAsrError(
      'MODEL_NOT_FOUND',
      `base model files not found: ${configPath} (pass baseDir / set RUSTASR_MODEL_FILES_DIR to a directory with the real config.json and tokenizer files)`,
    );
  }
  let base: unknown;
  try {
    base = JSON.parse(baseText);
  } catch (err) {
    throw new RustAsrError('INVALID_CONFIG', `${configPath}: ${String(err)}`);
  }
  dimsOfConfig(base); // validates the structure before anything is written
  for (const f of REQUIRED_FILES) {
    if (!existsSync(join(baseDir, f))) throw new RustAsrError('MODEL_NOT_FOUND', `base model file missing: ${join(baseDir, f)}`);
  }

  await mkdir(out, { recursive: true });
  await writeFile(join(out, 'config.json'), JSON.stringify(patchConfig(base, dims), null, 2) + '\n');
  for (const f of [...REQUIRED_FILES, ...OPTIONAL_FILES]) {
    const src = join(baseDir, f);
    if (existsSync(src)) await copyFile(src, join(out, f));
  }

  const specs = checkpointTensors(dims, { untied: opts.untied });
  const sources: TensorSource[] = specs.map((s) => ({
    name: s.name,
    dtype: 'BF16',
    shape: s.shape,
    fill: bf16Filler(s, seed),
  }));
  const modelPath = join(out, 'model.safetensors');
  const res = await writeSafetensors(modelPath, sources, {
    metadata: {
      format: 'pt',
      rustasr_synthetic: 'true',
      variant: opts.dims ? `${opts.variant}+custom-dims` : opts.variant,
      seed: String(seed),
    },
    bufferBytes: opts.bufferBytes,
    onProgress: opts.onProgress,
  });
  let params = 0;
  for (const s of specs) params += s.shape.reduce((p, d) => p * d, 1);
  return {
    dir: out,
    modelPath,
    bytes: res.bytes,
    tensors: res.tensors,
    params,
    dims,
    ms: performance.now() - t0,
  };
}
