#!/usr/bin/env node
// Mutation fuzzer for the TypeScript input paths, guided by outcome signatures:
//
//   wav        decodeWav (whole buffer) and WavDecoder (the streaming stage, fed the same bytes in random
//              pieces) on mutated WAV files. Oracle: each either returns samples or throws a RustAsrError with
//              a known code, in bounded time; when both succeed they give identical samples; every sample is
//              finite; the frame count matches the data.
//   tokenizer  AsrTokenizer.encode / decode and buildPrompt(context) on mutated strings. Oracle: no throw
//              other than RustAsrError, ids are integers in [0, size), decode(encode(s)) === NFC(s) for
//              well-formed strings, bounded time.
//
// Guidance: an input whose outcome signature (API, error code and message shape, or on success the format
// and size class) was never seen joins the live corpus, so the mutators spend their time on inputs that reach
// new parser states. Seeds: test/fuzz/wav/*.wav and test/fuzz/tokenizer/*.txt (`--write-seeds` rewrites the
// generated ones). Crashing / hanging inputs are saved under --artifacts.
//
//   npm run fuzz:ts -- [--target wav|tokenizer|all] [--iterations N] [--seed S] [--artifacts DIR]
// Exit status 1 when any oracle failed. Needs the TypeScript build (npm run build:ts).
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs, TextEncoder } from 'node:util';

import { buildWav, chunk, concatBytes, encodeSamples, rng } from './wav-builder.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    target: { type: 'string', default: 'all' },
    iterations: { type: 'string', default: '20000' },
    seed: { type: 'string', default: '1' },
    'max-len': { type: 'string', default: '16384' },
    'max-text': { type: 'string', default: '2048' },
    'slow-ms': { type: 'string', default: '1000' },
    artifacts: { type: 'string' },
    model: { type: 'string' },
    'write-seeds': { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
  },
});
const WAV_SEEDS = join(root, 'test', 'fuzz', 'wav');
const TOK_SEEDS = join(root, 'test', 'fuzz', 'tokenizer');

if (args['write-seeds']) {
  writeSeeds();
  process.exit(0);
}
if (!existsSync(join(root, 'dist', 'index.js'))) {
  console.error('fuzz-ts: dist/ is missing; run `npm run build:ts` first');
  process.exit(2);
}
const { decodeWav } = await import('../dist/audio/wav.js');
const { WavDecoder } = await import('../dist/stages/wav-decode.js');
const { RustAsrError, isRustAsrErrorCode } = await import('../dist/errors.js');

const ITER = Number(args.iterations);
const MAX_LEN = Number(args['max-len']);
const MAX_TEXT = Number(args['max-text']);
const SLOW_MS = Number(args['slow-ms']);
const rand = rng(Number(args.seed));
const artifacts = resolve(args.artifacts ?? join(tmpdir(), `rustasr-fuzz-${process.pid}`));
const int = (n) => Math.floor(rand() * n);
const pick = (xs) => xs[int(xs.length)];

/** Records an oracle failure and saves its input. */
const findings = [];
function finding(target, kind, input, detail) {
  mkdirSync(artifacts, { recursive: true });
  const file = join(artifacts, `${target}-${kind}-${findings.length}.${target === 'wav' ? 'wav' : 'txt'}`);
  writeFileSync(file, input);
  findings.push({ target, kind, detail: String(detail).slice(0, 300), file });
  if (args.verbose) console.error(`fuzz-ts: ${target} ${kind}: ${detail} -> ${file}`);
}

/** Message shape: numbers and quoted parts removed, so one code path gives one signature. */
const shape = (msg) => msg.replace(/0x[0-9a-f]+/gi, 'H').replace(/-?\d+(\.\d+)?/g, 'N').replace(/"[^"]*"/g, 'S');

// ----------------------------------------------------------------------------------------------- mutators

const INTERESTING_32 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 39, 40, 41, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 8000, 16000, 44100, 48000, 384000, 384001, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_16 = [0, 1, 2, 3, 6, 7, 8, 12, 16, 17, 24, 32, 64, 0x11, 0x55, 0xfffe, 0xffff, 0x7fff, 0x8000];
const TAGS = ['RIFF', 'WAVE', 'fmt ', 'data', 'LIST', 'fact', 'JUNK', 'RIFX', 'RF64'];

function mutateBytes(src, corpus) {
  let b = Uint8Array.from(src);
  const rounds = 1 + int(4);
  for (let r = 0; r < rounds; r++) {
    const n = b.length;
    switch (int(13)) {
      case 0: // bit flip
        if (n) b[int(n)] ^= 1 << int(8);
        break;
      case 1: // random byte
        if (n) b[int(n)] = int(256);
        break;
      case 2: // interesting u16 LE
        if (n >= 2) new DataView(b.buffer).setUint16(int(n - 1), pick(INTERESTING_16), true);
        break;
      case 3: // interesting u32 LE, often on a field of a known chunk
        if (n >= 4) {
          const at = rand() < 0.7 ? fieldOffset(b) : int(n - 3);
          new DataView(b.buffer).setUint32(Math.min(at, n - 4), pick(INTERESTING_32) >>> 0, true);
        }
        break;
      case 4: // u32 size +- small delta
        if (n >= 8) {
          const at = Math.min(fieldOffset(b), n - 4);
          const v = new DataView(b.buffer);
          v.setUint32(at, (v.getUint32(at, true) + int(9) - 4) >>> 0, true);
        }
        break;
      case 5: // truncate
        b = b.subarray(0, int(n + 1));
        break;
      case 6: // delete a range
        if (n) {
          const a = int(n);
          const len = 1 + int(Math.min(64, n - a));
          b = concatBytes([b.subarray(0, a), b.subarray(a + len)]);
        }
        break;
      case 7: // insert random bytes
        {
          const a = int(n + 1);
          const ins = Uint8Array.from({ length: 1 + int(16) }, () => int(256));
          b = concatBytes([b.subarray(0, a), ins, b.subarray(a)]);
        }
        break;
      case 8: // insert a chunk (known or random tag)
        {
          const a = Math.min(n, 12 + 2 * int(Math.max(1, (n - 12) / 2)));
          const c = chunk(pick(TAGS), Uint8Array.from({ length: int(48) }, () => int(256)));
          b = concatBytes([b.subarray(0, a), c, b.subarray(a)]);
        }
        break;
      case 9: // overwrite a 4-byte tag
        if (n >= 4) {
          const at = int(n - 3);
          const t = pick(TAGS);
          for (let i = 0; i < 4; i++) b[at + i] = t.charCodeAt(i);
        }
        break;
      case 10: // splice with another corpus entry
        {
          const o = pick(corpus);
          const a = int(n + 1);
          const s = int(o.length + 1);
          b = concatBytes([b.subarray(0, a), o.subarray(s, s + int(256))]);
        }
        break;
      case 11: // duplicate a range
        if (n) {
          const a = int(n);
          const len = 1 + int(Math.min(128, n - a));
          b = concatBytes([b.subarray(0, a + len), b.subarray(a, a + len), b.subarray(a + len)]);
        }
        break;
      default: // a freshly generated structured file
        b = generateWav();
    }
  }
  return b.length > MAX_LEN ? b.subarray(0, MAX_LEN) : Uint8Array.from(b);
}

/** Offset of a size or fmt field: RIFF size, a chunk size, or a fmt field, found by scanning for tags. */
function fieldOffset(b) {
  const offs = [4];
  for (let i = 12; i + 8 <= b.length; i++) {
    const t = String.fromCharCode(b[i], b[i + 1], b[i + 2], b[i + 3]);
    if (t === 'data' || t === 'LIST') offs.push(i + 4);
    if (t === 'fmt ') offs.push(i + 4, i + 8, i + 10, i + 12, i + 20, i + 22, i + 32);
  }
  return pick(offs);
}

function generateWav() {
  const bits = pick([8, 16, 24, 32, 64, 4, 12, 0]);
  const float = rand() < 0.3;
  const channels = pick([1, 1, 2, 3, 0, 8, 65535]);
  const frames = int(64);
  const x = Array.from({ length: frames * Math.max(1, Math.min(channels, 4)) }, () => (rand() < 0.02 ? pick([NaN, Infinity, -Infinity, 1e30]) : 2 * rand() - 1));
  const okBits = [8, 16, 24, 32, 64].includes(bits) && (!float || bits >= 32) && (float || bits <= 32);
  const data = okBits ? encodeSamples(x, { bits, float }) : Uint8Array.from({ length: int(256) }, () => int(256));
  return buildWav({
    formatTag: float ? 3 : pick([1, 1, 1, 2, 6, 7, 0x11]),
    channels,
    sampleRate: pick([8000, 16000, 44100, 0, 384000, 384001, 1, 0xffffffff]),
    bits,
    extensible: rand() < 0.2,
    data,
    ...(rand() < 0.2 ? { dataSize: pick([0, 0xffffffff, data.length + 1, Math.max(0, data.length - 1)]) } : {}),
    ...(rand() < 0.2 ? { riffSize: pick([0, 4, 0xffffffff]) } : {}),
    before: rand() < 0.2 ? [chunk('JUNK', new Uint8Array(int(5)))] : [],
    after: rand() < 0.3 ? [chunk('LIST', new Uint8Array(int(7)))] : [],
  });
}

// ------------------------------------------------------------------------------------------------ targets

/** Runs the WavDecoder stage synchronously over `pieces` (its _transform / _flush call back synchronously). */
function streamDecode(bytes) {
  const dec = new WavDecoder();
  const out = [];
  dec.push = (c) => {
    if (c !== null) out.push(c.samples);
    return true;
  };
  let error;
  const cb = (err) => {
    if (err) error = err;
  };
  for (let p = 0; p < bytes.length && !error; ) {
    const n = rand() < 0.5 ? bytes.length : 1 + int(64);
    dec._transform(bytes.subarray(p, p + n), 'buffer', cb);
    p += n;
  }
  if (!error) dec._flush(cb);
  if (error) throw error;
  let len = 0;
  for (const s of out) len += s.length;
  const all = new Float32Array(len);
  let o = 0;
  for (const s of out) {
    all.set(s, o);
    o += s.length;
  }
  return all;
}

function outcome(api, f) {
  try {
    return { ok: true, value: f(), sig: api };
  } catch (err) {
    if (!(err instanceof RustAsrError) || !isRustAsrErrorCode(err.code)) return { ok: false, bad: err, sig: `${api}:THROW` };
    return { ok: false, err, sig: `${api}:${err.code}:${shape(err.message)}` };
  }
}

const sizeClass = (n) => (n === 0 ? 0 : Math.ceil(Math.log2(n + 1)));

function runWav(input) {
  const t = performance.now();
  const a = outcome('decodeWav', () => decodeWav(input));
  const b = outcome('stream', () => streamDecode(input));
  const ms = performance.now() - t;
  const sigs = [];
  for (const r of [a, b]) {
    if (r.bad) finding('wav', 'non-RustAsrError', input, `${r.sig}: ${r.bad?.stack ?? r.bad}`);
    if (r.ok) {
      const samples = r.sig === 'decodeWav' ? r.value.samples : r.value;
      if (samples.length === 0) finding('wav', 'empty-success', input, r.sig);
      for (let i = 0; i < samples.length; i++) {
        if (!Number.isFinite(samples[i])) {
          finding('wav', 'non-finite-sample', input, `${r.sig} sample ${i}`);
          break;
        }
      }
      sigs.push(r.sig === 'decodeWav' ? `decodeWav:ok:${r.value.info.format}${r.value.info.bitsPerSample}:c${Math.min(r.value.info.channels, 3)}:n${sizeClass(samples.length)}` : `stream:ok:n${sizeClass(samples.length)}`);
    } else sigs.push(r.sig);
  }
  if (a.ok && b.ok) {
    const x = a.value.samples;
    const y = b.value;
    let same = x.length === y.length;
    for (let i = 0; same && i < x.length; i++) same = Object.is(x[i], y[i]);
    if (!same) finding('wav', 'decoders-disagree', input, `decodeWav ${x.length} samples, stream ${y.length}`);
  }
  if (ms > SLOW_MS) finding('wav', 'slow', input, `${ms.toFixed(0)} ms for ${input.length} bytes`);
  // Divergences (one decoder fails, the other not) are expected in a few documented cases; they are counted.
  const diverge = a.ok !== b.ok ? `${a.ok ? 'ok' : a.err.code}/${b.ok ? 'ok' : b.err.code}` : undefined;
  return { sig: sigs.join('|'), diverge };
}

function loadSeeds(dir, ext) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(ext))
    .sort()
    .map((f) => readFileSync(join(dir, f)));
}

function fuzzWav(iterations) {
  const corpus = loadSeeds(WAV_SEEDS, '.wav').map((b) => Uint8Array.from(b));
  if (corpus.length === 0) corpus.push(generateWav());
  const seen = new Map();
  const divergences = {};
  const t0 = performance.now();
  const run = (input) => {
    const { sig, diverge } = runWav(input);
    if (diverge) {
      divergences[diverge] = (divergences[diverge] ?? 0) + 1;
      // Keep the first example of each kind (not a finding).
      if (divergences[diverge] === 1 && args.artifacts) {
        mkdirSync(artifacts, { recursive: true });
        writeFileSync(join(artifacts, `wav-divergence-${diverge.replace('/', '-')}.wav`), input);
      }
    }
    if (!seen.has(sig)) {
      seen.set(sig, input.length);
      return true;
    }
    return false;
  };
  for (const s of corpus.slice()) run(s);
  for (let i = 0; i < iterations; i++) {
    const input = mutateBytes(pick(corpus), corpus);
    if (run(input) && corpus.length < 4096) corpus.push(input);
    if (args.verbose && (i + 1) % 100000 === 0) {
      console.error(`fuzz-ts: wav ${i + 1}/${iterations}, ${seen.size} signatures, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    executions: iterations,
    // Each execution runs both decoders.
    seconds: +seconds.toFixed(1),
    execsPerSecond: Math.round(iterations / seconds),
    signatures: seen.size,
    corpus: corpus.length,
    divergences,
  };
}

// Tokenizer.

const SPECIAL = ['<|im_start|>', '<|im_end|>', '<|audio_pad|>', '<|audio_start|>', '<|audio_end|>', '<asr_text>', '<|endoftext|>', '<|', '|>', '<'];
const PIECES = ['a', ' ', '  ', '\n', '\r\n', '\t', "'s", "'LL", '123', '4567', 'ß', 'é', 'e\u0301', 'İ', 'ﬁ', '中文', 'Привет', 'مرحبا', '\u200d', '\u200b', '\ufeff', '\u0000', '\u007f', '😀', '👨‍👩‍👧', '\ud83d', '\ude00', '\uffff', '\ufffd', 'Ａ', '١٢٣', '\u2028', ...SPECIAL];

function mutateString(s, corpus) {
  const cps = Array.from(s);
  const rounds = 1 + int(4);
  for (let r = 0; r < rounds; r++) {
    switch (int(7)) {
      case 0:
        cps.splice(int(cps.length + 1), 0, pick(PIECES));
        break;
      case 1:
        if (cps.length) cps.splice(int(cps.length), 1 + int(4));
        break;
      case 2:
        cps.splice(int(cps.length + 1), 0, String.fromCodePoint(int(0x110000) & ~(rand() < 0.5 ? 0 : 0x1f0000)));
        break;
      case 3:
        cps.splice(int(cps.length + 1), 0, String.fromCharCode(int(0x10000))); // may be a lone surrogate
        break;
      case 4: {
        const o = Array.from(pick(corpus));
        const a = int(o.length + 1);
        cps.splice(int(cps.length + 1), 0, ...o.slice(a, a + int(32)));
        break;
      }
      case 5:
        cps.splice(int(cps.length + 1), 0, pick(PIECES).repeat(1 + int(rand() < 0.05 ? 2000 : 20)));
        break;
      default:
        if (cps.length) cps[int(cps.length)] = pick(PIECES);
    }
  }
  const out = cps.join('');
  return out.length > MAX_TEXT ? out.slice(0, MAX_TEXT) : out;
}

const wellFormed = (s) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

async function fuzzTokenizer(iterations) {
  const { loadTokenizer } = await import('../dist/text/tokenizer.js');
  const { buildPrompt } = await import('../dist/text/prompt.js');
  const goldenDir = resolve(process.env.RUSTASR_GOLDEN_DIR ?? join(root, '..', 'shared', 'golden'));
  const dir = resolve(args.model ?? join(goldenDir, 'models', 'tiny-a'));
  const tok = await loadTokenizer(dir);
  const corpus = loadSeeds(TOK_SEEDS, '.txt').map((b) => b.toString('utf8'));
  if (corpus.length === 0) corpus.push('hello world');
  const seen = new Set();
  let roundTripChecked = 0;
  const t0 = performance.now();
  const run = (s) => {
    const t = performance.now();
    const sig = [];
    const enc = outcome('encode', () => tok.encode(s));
    if (enc.bad) finding('tokenizer', 'non-RustAsrError', s, `encode: ${enc.bad?.stack ?? enc.bad}`);
    if (enc.ok) {
      const ids = enc.value;
      if (!Array.isArray(ids) || ids.some((id) => !Number.isInteger(id) || id < 0 || id >= tok.size)) {
        finding('tokenizer', 'bad-ids', s, JSON.stringify(ids).slice(0, 200));
      } else {
        const dec = outcome('decode', () => tok.decode(ids));
        if (dec.bad) finding('tokenizer', 'non-RustAsrError', s, `decode: ${dec.bad?.stack ?? dec.bad}`);
        if (dec.ok && wellFormed(s)) {
          roundTripChecked++;
          if (dec.value !== s.normalize('NFC')) finding('tokenizer', 'round-trip', s, `${JSON.stringify(s).slice(0, 80)} -> ${JSON.stringify(dec.value).slice(0, 80)}`);
        }
        sig.push(`enc:n${sizeClass(ids.length)}:sp${ids.some((id) => tok.isSpecial(id)) ? 1 : 0}`);
      }
    } else if (enc.err) sig.push(enc.sig);
    const p = outcome('prompt', () => buildPrompt(tok, { context: s, audioTokens: 1 + int(50), language: rand() < 0.3 ? 'English' : undefined }));
    if (p.bad) finding('tokenizer', 'non-RustAsrError', s, `buildPrompt: ${p.bad?.stack ?? p.bad}`);
    sig.push(p.ok ? 'prompt:ok' : p.sig);
    const ms = performance.now() - t;
    if (ms > SLOW_MS) finding('tokenizer', 'slow', s, `${ms.toFixed(0)} ms for ${s.length} chars`);
    const key = sig.join('|');
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  };
  for (const s of corpus.slice()) run(s);
  for (let i = 0; i < iterations; i++) {
    const s = mutateString(pick(corpus), corpus);
    if (run(s) && corpus.length < 2048) corpus.push(s);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { executions: iterations, seconds: +seconds.toFixed(1), execsPerSecond: Math.round(iterations / seconds), signatures: seen.size, corpus: corpus.length, roundTripChecked };
}

// --------------------------------------------------------------------------------------------------- seeds

function writeSeeds() {
  mkdirSync(WAV_SEEDS, { recursive: true });
  mkdirSync(TOK_SEEDS, { recursive: true });
  const r = rng(7);
  const tone = (n, ch = 1) => Array.from({ length: n * ch }, (_, i) => 0.5 * Math.sin(i / 3) + 0.1 * (r() - 0.5));
  const seeds = {
    'pcm8-mono': buildWav({ bits: 8, data: encodeSamples(tone(64), { bits: 8 }) }),
    'pcm16-mono': buildWav({ data: encodeSamples(tone(64)) }),
    'pcm16-stereo-44k1': buildWav({ channels: 2, sampleRate: 44100, data: encodeSamples(tone(48, 2)) }),
    'pcm24-mono-8k': buildWav({ bits: 24, sampleRate: 8000, data: encodeSamples(tone(40), { bits: 24 }) }),
    'pcm32-mono-48k': buildWav({ bits: 32, sampleRate: 48000, data: encodeSamples(tone(40), { bits: 32 }) }),
    'f32-mono': buildWav({ formatTag: 3, bits: 32, data: encodeSamples(tone(40), { bits: 32, float: true }) }),
    'f64-stereo': buildWav({ formatTag: 3, bits: 64, channels: 2, data: encodeSamples(tone(24, 2), { bits: 64, float: true }) }),
    'extensible-pcm16-3ch': buildWav({ extensible: true, channels: 3, data: encodeSamples(tone(30, 3)) }),
    'extensible-f32': buildWav({ extensible: true, formatTag: 3, bits: 32, data: encodeSamples(tone(30), { bits: 32, float: true }) }),
    'list-junk-odd': buildWav({
      bits: 8,
      data: encodeSamples(tone(33), { bits: 8 }),
      before: [chunk('JUNK', new Uint8Array(3))],
      after: [chunk('LIST', new TextEncoder().encode('INFOISFT\u0005\0\0\0Lavf\0'))],
    }),
    'streaming-sizes': buildWav({ data: encodeSamples(tone(50)), dataSize: 0xffffffff, riffSize: 0xffffffff }),
    'data-size-zero': buildWav({ data: encodeSamples(tone(50)), dataSize: 0 }),
    'truncated-data': buildWav({ data: encodeSamples(tone(50)), dataSize: 400 }),
    'mulaw': buildWav({ formatTag: 7, bits: 8, data: new Uint8Array(64).fill(0xff) }),
    'ima-adpcm': buildWav({ formatTag: 0x11, bits: 4, blockAlign: 256, data: new Uint8Array(256) }),
    'nan-f32': buildWav({ formatTag: 3, bits: 32, data: encodeSamples([0.1, NaN, 0.2], { bits: 32, float: true }) }),
    'header-only': buildWav({ data: new Uint8Array(0) }),
  };
  for (const [name, bytes] of Object.entries(seeds)) writeFileSync(join(WAV_SEEDS, `${name}.wav`), bytes);
  const texts = {
    'en-glossary': 'Glossary: Qwen3-ASR, antirez, llama.cpp, whisper.cpp. Names: Ana, Bjørn.',
    'ru': 'Привет, мир! Это проверка токенизатора — 123 456.',
    'zh-ja-ko': '你好，世界。こんにちは世界。안녕하세요 세계.',
    'emoji-zwj': 'family 👨‍👩‍👧 flags 🇺🇦🇯🇵 skin 👋🏽 text\u200dwith\u200bjoiners',
    'special-tokens': '<|im_start|>system\nhello<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_end|><|im_end|>\n<asr_text>',
    'whitespace': ' \t\n\r\n  \u00a0\u2003\u3000 x  \n\n\n',
    'combining': 'e\u0301 a\u0308 \u1100\u1161\u11a8 Ω Å ﬁ ẞ İı',
    'numbers-punct': "It's 3.14159; we'll say 1,000,000 — isn't it? (yes!) [no] {maybe} #tag @user",
  };
  for (const [name, s] of Object.entries(texts)) writeFileSync(join(TOK_SEEDS, `${name}.txt`), s);
  console.log(`fuzz-ts: wrote ${Object.keys(seeds).length} WAV and ${Object.keys(texts).length} text seeds`);
}

// ---------------------------------------------------------------------------------------------------- main

const summary = { seed: Number(args.seed), iterations: ITER, targets: {} };
if (args.target === 'wav' || args.target === 'all') summary.targets.wav = fuzzWav(ITER);
if (args.target === 'tokenizer' || args.target === 'all') summary.targets.tokenizer = await fuzzTokenizer(ITER);
if (Object.keys(summary.targets).length === 0) {
  console.error(`fuzz-ts: unknown --target ${args.target}`);
  process.exit(2);
}
summary.findings = findings.length;
summary.findingList = findings.slice(0, 20);
if (findings.length) summary.artifacts = artifacts;
summary.ok = findings.length === 0;
console.log(JSON.stringify(summary, null, 2));
process.exitCode = summary.ok ? 0 : 1;
