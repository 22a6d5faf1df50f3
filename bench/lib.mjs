// Shared helpers of the benchmark: statistics, the cost model (FLOPs and bytes from config.json), WAV
// writing, the readable table.
import { Buffer } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes of one machine. */
export function epochMs() {
  return performance.timeOrigin + performance.now();
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** {median, min, max, n} of finite values. */
export function stats(values) {
  const v = values.filter((x) => Number.isFinite(x));
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
}

// ------------------------------------------------------------------------------------------------
// Cost model. Every dimension comes from config.json (thinker_config.audio_config / text_config), as in
// the engine; the chunking rules are the engine's (native/src/model/model.cpp).

export function readDims(modelDir) {
  const cfg = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8'));
  const th = cfg.thinker_config ?? cfg;
  const a = th.audio_config;
  const t = th.text_config;
  return {
    audio: {
      mels: a.num_mel_bins,
      d: a.d_model,
      layers: a.encoder_layers,
      heads: a.encoder_attention_heads,
      ffn: a.encoder_ffn_dim,
      C: a.downsample_hidden_size,
      out: a.output_dim,
      nWindow: a.n_window,
      nWindowInfer: a.n_window_infer,
    },
    text: {
      hidden: t.hidden_size,
      inter: t.intermediate_size,
      layers: t.num_hidden_layers,
      heads: t.num_attention_heads,
      kvHeads: t.num_key_value_heads,
      hd: t.head_dim ?? t.hidden_size / t.num_attention_heads,
      vocab: t.vocab_size,
    },
  };
}

const half = (x) => Math.ceil(x / 2); // conv 3x3, stride 2, padding 1

/**
 * Encoder FLOPs (multiply-add = 2) for `frames` mel frames: conv stem (three 3x3/s2 convs as im2col GEMMs
 * per 100-frame chunk, a partial last chunk padded when there are several), conv_out, the transformer layers
 * (q/k/v/o, fc1/fc2, windowed bidirectional attention) and proj1/proj2. Norms, GELU, adds are left out.
 */
export function encoderFlops(dims, frames) {
  const a = dims.audio;
  const chunk = 2 * a.nWindow;
  const nChunks = Math.ceil(frames / chunk);
  const f1 = half(a.mels), f2 = half(f1), f3 = half(f2);
  let conv = 0, tokens = 0;
  for (let c = 0; c < nChunks; c++) {
    const valid = Math.min(chunk, frames - c * chunk);
    const tIn = nChunks > 1 ? chunk : valid;
    const t1 = half(tIn), t2 = half(t1), t3 = half(t2);
    conv += 2 * f1 * t1 * a.C * 9;
    conv += 2 * f2 * t2 * a.C * (a.C * 9);
    conv += 2 * f3 * t3 * a.C * (a.C * 9);
    const keep = half(half(half(valid)));
    conv += 2 * keep * (a.C * f3) * a.d;
    tokens += keep;
  }
  const N = tokens;
  const window = half(half(half(chunk))) * Math.floor(a.nWindowInfer / chunk);
  let attn = 0;
  for (let s = 0; s < N; s += window) {
    const len = Math.min(window, N - s);
    attn += 2 * 2 * len * len * a.d; // QK^T and AV over all heads
  }
  const perLayerLinear = 2 * N * (4 * a.d * a.d + 2 * a.d * a.ffn);
  const layers = a.layers * (perLayerLinear + attn);
  const proj = 2 * N * a.d * a.d + 2 * N * a.d * a.out;
  return { total: conv + layers + proj, conv, layers, proj, tokens: N };
}

/** Weight elements of one decoder layer's matrices (q, k, v, o, gate, up, down). */
function decoderLayerParams(t) {
  const q = t.heads * t.hd, kv = t.kvHeads * t.hd;
  return t.hidden * (q + 2 * kv) + q * t.hidden + 3 * t.hidden * t.inter;
}

/**
 * Decoder prefill FLOPs for a prompt of `n` tokens: 2 * (layer matrix params) * n, causal attention
 * (QK^T + AV, n(n+1)/2 query-key pairs per head), and the lm_head for the last row.
 */
export function prefillFlops(dims, n) {
  const t = dims.text;
  const q = t.heads * t.hd;
  const linear = 2 * decoderLayerParams(t) * n * t.layers;
  const attn = t.layers * 2 * 2 * q * ((n * (n + 1)) / 2);
  const head = 2 * t.vocab * t.hidden;
  return { total: linear + attn + head, linear, attn, head };
}

/**
 * Bytes one decode step must read: every decoder layer's matrices and norms plus the lm_head (weights at
 * `weightBytes` per element: 2 for BF16, 1 for int8, plus `groupScaleBytes` per `group` columns: int8 as
 * Model.load documents it, a float32 scale per 128 columns), one embedding row, and (reported separately)
 * the float32 KV cache at position `pos`.
 */
export function decodeBytes(dims, { weightBytes = 2, groupScaleBytes = 0, group = 128, pos = 0 } = {}) {
  const t = dims.text;
  const perWeight = weightBytes + groupScaleBytes / group;
  const layer = decoderLayerParams(t) * perWeight + (2 * t.hidden + 2 * t.hd) * 2;
  const lmHead = t.vocab * t.hidden * perWeight;
  const weights = t.layers * layer + lmHead + t.hidden * 2 + t.hidden * 2; // + embedding row + final norm
  const kvCache = t.layers * 2 * pos * t.kvHeads * t.hd * 4;
  return { weights, kvCache };
}

// ------------------------------------------------------------------------------------------------

/** 16 kHz mono float32 WAV (format 3). */
export function encodeWavF32(samples, sampleRate) {
  const data = Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'ascii');
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVE', 8, 'ascii');
  h.write('fmt ', 12, 'ascii');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(3, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * 4, 28);
  h.writeUInt16LE(4, 32);
  h.writeUInt16LE(32, 34);
  h.write('data', 36, 'ascii');
  h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}

// ------------------------------------------------------------------------------------------------

/** A fixed-width text table: `cols` = [{ key, title, fmt? }], rows of objects. */
export function table(cols, rows) {
  const cells = rows.map((r) => cols.map((c) => (c.fmt ? c.fmt(r[c.key], r) : String(r[c.key] ?? ''))));
  const widths = cols.map((c, i) => Math.max(c.title.length, ...cells.map((row) => row[i].length)));
  const line = (vals) => vals.map((v, i) => (i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ');
  return [line(cols.map((c) => c.title)), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

export const fix = (digits) => (v) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
