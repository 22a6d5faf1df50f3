// Qwen2/Qwen3 byte-level BPE tokenizer built from a checkpoint's vocab.json + merges.txt +
// tokenizer_config.json (the Qwen3-ASR checkpoints ship no tokenizer.json).
//
// The source of truth for encoding is @huggingface/tokenizers, fed an in-memory tokenizer.json equivalent to
// the one transformers' Qwen2TokenizerFast would build: NFC normaliser, Split(Qwen2 regex, Isolated) followed
// by ByteLevel(add_prefix_space=false, use_regex=false), BPE, ByteLevel decoder, and every entry of
// `added_tokens_decoder` as a non-normalised added token (loadReferenceTokenizer). Building it takes ~0.4 s
// of a core per process, so loadTokenizer uses the fast path of text/bpe.ts instead: the same pipeline over
// compact tables, read from a validated binary cache file (text/tokenizer-cache.ts) once they were built,
// and checked against the library on the fuzz corpus (test/tokenizer.test.ts). A configuration the fast path
// does not cover falls back to the library. Decoding is done here from raw token bytes, so that ids outside
// the vocabulary (unused embedding rows a model may still generate) never throw and incomplete UTF-8
// sequences can be handled incrementally.

import { stat } from 'node:fs/promises';

import type { Tokenizer } from '@huggingface/tokenizers';
import { RustAsrError } from '../errors.js';
import { resolveCacheDir } from '../hub/cache.js';
import { FILE_LIMITS, childPath, readRegularFile, showPath, statRegularFile } from '../hub/files.js';
import { FastBpe, buildBpeTables, bytesTokenString, type BpeTables } from './bpe.js';
import { readTablesCache, tokenizerCachePath, writeTablesCache, type SourceStamp } from './tokenizer-cache.js';

/** The pre-tokenizer regex of Qwen2's tokenizer.json (Oniguruma syntax, translated by the library). */
export const QWEN2_PRETOKENIZE_REGEX = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

/** An added (control) token as declared in tokenizer_config.json's `added_tokens_decoder`. */
export interface AddedTokenInfo {
  id: number;
  content: string;
  /** Special tokens are dropped by `decode(ids, { skipSpecial: true })`. */
  special: boolean;
}

export interface DecodeOptions {
  /** Drop special added tokens (`<|im_end|>`, `<|audio_pad|>`, ...). Non-special ones such as `<asr_text>` are kept. */
  skipSpecial?: boolean;
}

export interface AsrTokenizer {
  /** One past the highest id known to the tokenizer (vocab + added tokens). Model vocabularies may be larger. */
  readonly size: number;
  /** Added tokens by id, in id order. */
  readonly addedTokens: readonly AddedTokenInfo[];
  /**
   * Encodes text. No BOS/EOS or template tokens are inserted; added tokens written literally in the text
   * (e.g. `<|im_start|>`) are recognised as single ids.
   */
  encode(text: string): number[];
  /** Decodes ids to text; invalid UTF-8 becomes U+FFFD, unknown ids decode to nothing. */
  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /**
   * The raw bytes a token id stands for: byte-level vocab tokens are mapped back through the GPT-2 byte
   * alphabet, added tokens give the UTF-8 of their content, unknown ids give an empty array.
   * The returned array is shared: do not modify it.
   */
  tokenBytes(id: number): Uint8Array;
  /** True for added tokens marked special. */
  isSpecial(id: number): boolean;
}

/**
 * GPT-2 byte-level alphabet: byte b maps to a printable code point. Printable Latin-1 bytes map to
 * themselves; the remaining 68 bytes map, in increasing order, to U+0100, U+0101, ...
 * Returns code point -> byte.
 */
function byteLevelDecoderTable(): Map<number, number> {
  const table = new Map<number, number>();
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (printable(b)) table.set(b, b);
    else table.set(256 + extra++, b);
  }
  return table;
}

const BYTE_LEVEL_DECODE = byteLevelDecoderTable();
const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();

/** Size caps of the tokenizer files (hub/files.ts). */
const TOKENIZER_FILE_LIMITS: Readonly<Record<string, number>> = {
  'vocab.json': FILE_LIMITS.tokenizer,
  'merges.txt': FILE_LIMITS.tokenizer,
};

async function readModelFile(dir: string | Buffer, name: string): Promise<string> {
  const file = childPath(dir, name);
  // A regular file under its cap (a FIFO, a device or a huge file is an error at once, see hub/files.ts).
  const bytes = await readRegularFile(file, {
    maxBytes: TOKENIZER_FILE_LIMITS[name] ?? FILE_LIMITS.json,
    label: name,
    tooLargeCode: 'INVALID_TOKENIZER',
    missing: { code: 'MODEL_NOT_FOUND', message: `tokenizer file not found: ${showPath(file)}` },
  });
  return (bytes as Buffer).toString('utf8');
}

function invalid(file: string, what: string, cause?: unknown): RustAsrError {
  return new RustAsrError('INVALID_TOKENIZER', `invalid ${file}: ${what}`, cause === undefined ? undefined : { cause });
}

function parseJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw invalid(file, (err as Error).message, err);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseVocab(text: string): Record<string, number> {
  const v = parseJson('vocab.json', text);
  if (!isRecord(v)) throw invalid('vocab.json', 'expected an object mapping tokens to ids');
  const keys = Object.keys(v);
  if (keys.length === 0) throw invalid('vocab.json', 'empty vocabulary');
  for (const k of keys) {
    const id = v[k];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw invalid('vocab.json', `token ${JSON.stringify(k)} has a non-integer id`);
    }
  }
  return v as Record<string, number>;
}

function parseMerges(text: string): [string, string][] {
  const merges: [string, string][] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line === '' || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
      throw invalid('merges.txt', `line ${i + 1} is not "<left> <right>": ${JSON.stringify(line.slice(0, 80))}`);
    }
    merges.push([parts[0] as string, parts[1] as string]);
  }
  if (merges.length === 0) throw invalid('merges.txt', 'no merges');
  return merges;
}

interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

function parseAddedTokens(config: Record<string, unknown>): AddedTokenJson[] {
  const dec = config['added_tokens_decoder'];
  if (dec === undefined) return [];
  if (!isRecord(dec)) throw invalid('tokenizer_config.json', 'added_tokens_decoder is not an object');
  const out: AddedTokenJson[] = [];
  for (const [key, raw] of Object.entries(dec)) {
    const id = Number(key);
    if (!Number.isInteger(id) || id < 0 || !isRecord(raw) || typeof raw['content'] !== 'string' || raw['content'] === '') {
      throw invalid('tokenizer_config.json', `bad added_tokens_decoder entry ${JSON.stringify(key)}`);
    }
    out.push({
      id,
      content: raw['content'],
      single_word: raw['single_word'] === true,
      lstrip: raw['lstrip'] === true,
      rstrip: raw['rstrip'] === true,
      // The brief (and Qwen's files) declare them non-normalised; honour an explicit `true` anyway.
      normalized: raw['normalized'] === true,
      special: raw['special'] === true,
    });
  }
  out.sort((a, b) => a.id - b.id);
  return out;
}

/** The reference tokenizer: @huggingface/tokenizers for encoding (see the top of this file). */
class QwenTokenizer implements AsrTokenizer {
  readonly size: number;
  readonly addedTokens: readonly AddedTokenInfo[];
  private readonly hf: Tokenizer;
  private readonly vocab: Map<string, number>;
  private readonly idToTok: (string | undefined)[];
  private readonly added = new Map<number, AddedTokenInfo>();
  private readonly addedByContent = new Map<string, number>();
  private readonly bytesCache = new Map<number, Uint8Array>();

  constructor(
    TokenizerClass: typeof Tokenizer,
    vocab: Record<string, number>,
    merges: [string, string][],
    added: AddedTokenJson[],
    config: Record<string, unknown>,
  ) {
    this.vocab = new Map(Object.entries(vocab));
    let size = 0;
    for (const id of this.vocab.values()) size = Math.max(size, id + 1);
    for (const t of added) size = Math.max(size, t.id + 1);
    this.size = size;
    this.idToTok = new Array<string | undefined>(size);
    for (const [tok, id] of this.vocab) this.idToTok[id] = tok;
    for (const t of added) {
      const info: AddedTokenInfo = { id: t.id, content: t.content, special: t.special };
      this.added.set(t.id, info);
      this.addedByContent.set(t.content, t.id);
      this.idToTok[t.id] = t.content;
    }
    this.addedTokens = [...this.added.values()];

    const tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: { type: 'NFC' },
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: QWEN2_PRETOKENIZE_REGEX }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
        ],
      },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges,
      },
    };
    // Only the fields the library reads for encoding; the rest of tokenizer_config.json is irrelevant here.
    const hfConfig = {
      add_bos_token: false,
      add_eos_token: false,
      clean_up_tokenization_spaces: false,
      split_special_tokens: config['split_special_tokens'] === true,
    };
    try {
      this.hf = new TokenizerClass(tokenizerJson, hfConfig);
    } catch (err) {
      throw invalid('tokenizer files', (err as Error).message, err);
    }
  }

  encode(text: string): number[] {
    if (text === '') return [];
    const { ids } = this.hf.encode(text, { add_special_tokens: false });
    for (const id of ids) {
      // unk_token is null, so a byte-level BPE can only fail here if the vocab lacks a base byte.
      if (typeof id !== 'number') {
        throw new RustAsrError('INVALID_TOKENIZER', 'vocabulary cannot encode the text (missing byte-level base token)');
      }
    }
    return ids;
  }

  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      if (opts?.skipSpecial && this.isSpecial(id)) continue;
      const b = this.tokenBytes(id);
      parts.push(b);
      total += b.length;
    }
    const all = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.length;
    }
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(all); // ignoreBOM: keep a leading U+FEFF
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token) ?? this.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 ? this.idToTok[id] : undefined;
  }

  isSpecial(id: number): boolean {
    return this.added.get(id)?.special === true;
  }

  tokenBytes(id: number): Uint8Array {
    const cached = this.bytesCache.get(id);
    if (cached) return cached;
    let bytes: Uint8Array;
    const added = this.added.get(id);
    if (added) {
      bytes = utf8.encode(added.content);
    } else {
      const tok = this.idToToken(id);
      if (tok === undefined) return EMPTY;
      const out: number[] = [];
      for (const ch of tok) {
        const cp = ch.codePointAt(0) as number;
        const b = BYTE_LEVEL_DECODE.get(cp);
        if (b !== undefined) out.push(b);
        else out.push(...utf8.encode(ch)); // not a byte-level symbol: keep it as text
      }
      bytes = Uint8Array.from(out);
    }
    this.bytesCache.set(id, bytes);
    return bytes;
  }
}

/** Decoding and lookups shared by the fast tokenizer: raw token bytes from the tables. */
class FastQwenTokenizer implements AsrTokenizer {
  readonly size: number;
  readonly addedTokens: readonly AddedTokenInfo[];
  private readonly bpe: FastBpe;
  private readonly added = new Map<number, AddedTokenInfo>();
  private readonly addedByContent = new Map<string, number>();
  private readonly addedBytes = new Map<number, Uint8Array>();
  private byToken: Map<string, number> | undefined;

  constructor(
    private readonly t: BpeTables,
    added: AddedTokenJson[],
  ) {
    let size = t.size;
    for (const a of added) {
      size = Math.max(size, a.id + 1);
      const info: AddedTokenInfo = { id: a.id, content: a.content, special: a.special };
      this.added.set(a.id, info);
      this.addedByContent.set(a.content, a.id);
      this.addedBytes.set(a.id, utf8.encode(a.content));
    }
    this.size = size;
    this.addedTokens = [...this.added.values()];
    this.bpe = new FastBpe(t, added);
  }

  encode(text: string): number[] {
    return this.bpe.encode(text);
  }

  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string {
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      if (!(opts?.skipSpecial && this.isSpecial(id))) total += this.tokenBytes(id).length;
    }
    const all = new Uint8Array(total);
    let off = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      if (opts?.skipSpecial && this.isSpecial(id)) continue;
      const b = this.tokenBytes(id);
      all.set(b, off);
      off += b.length;
    }
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(all); // ignoreBOM: keep a leading U+FEFF
  }

  tokenToId(token: string): number | undefined {
    const a = this.addedByContent.get(token);
    if (a !== undefined) return a;
    if (!this.byToken) {
      // Built on first use (tools and tests; transcription never needs it).
      this.byToken = new Map();
      for (let id = 0; id < this.t.size; id++) {
        if ((this.t.offsets[id + 1] as number) > (this.t.offsets[id] as number)) this.byToken.set(this.vocabToken(id), id);
      }
    }
    return this.byToken.get(token);
  }

  private vocabToken(id: number): string {
    return bytesTokenString(this.t.blob.subarray(this.t.offsets[id], this.t.offsets[id + 1]));
  }

  idToToken(id: number): string | undefined {
    if (!Number.isInteger(id) || id < 0) return undefined;
    const a = this.added.get(id);
    if (a) return a.content;
    if (id >= this.t.size || (this.t.offsets[id + 1] as number) === (this.t.offsets[id] as number)) return undefined;
    return this.vocabToken(id);
  }

  isSpecial(id: number): boolean {
    return this.added.get(id)?.special === true;
  }

  tokenBytes(id: number): Uint8Array {
    const a = this.addedBytes.get(id);
    if (a) return a;
    if (!Number.isInteger(id) || id < 0 || id >= this.t.size) return EMPTY;
    return this.t.blob.subarray(this.t.offsets[id], this.t.offsets[id + 1]);
  }
}

export interface LoadTokenizerOptions {
  /**
   * Root of the cache directory the fast path keeps its binary tables in (`<root>/tokenizer/`): by default the
   * model cache root ($RUSTASR_CACHE_DIR, else $XDG_CACHE_HOME/rustasr, else ~/.cache/rustasr). `false`: no
   * cache file is read or written (the tables are built from the sources at every load).
   */
  cacheDir?: string | false;
}

async function readConfig(modelDir: string | Buffer): Promise<{ config: Record<string, unknown>; added: AddedTokenJson[] }> {
  const config = parseJson('tokenizer_config.json', await readModelFile(modelDir, 'tokenizer_config.json'));
  if (!isRecord(config)) throw invalid('tokenizer_config.json', 'expected an object');
  return { config, added: parseAddedTokens(config) };
}

/** Whether the fast path reproduces the library for this configuration (the tables add their own condition). */
function fastConfig(config: Record<string, unknown>, added: AddedTokenJson[]): boolean {
  return config['split_special_tokens'] !== true && added.every((a) => !a.lstrip && !a.rstrip && !a.single_word && !a.normalized);
}

async function stampOf(modelDir: string | Buffer, name: string): Promise<SourceStamp> {
  const file = childPath(modelDir, name);
  await statRegularFile(file, { missing: { code: 'MODEL_NOT_FOUND', message: `tokenizer file not found: ${showPath(file)}` } });
  const st = await stat(file, { bigint: true });
  return { size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino };
}

/** How the last loadTokenizer call got its tables (tests and the bench): 'hit', 'miss' (built, cache written), 'unwritable', 'off', 'reference'. */
export let lastTokenizerSource: 'hit' | 'miss' | 'unwritable' | 'off' | 'reference' = 'off';

/**
 * The reference tokenizer (@huggingface/tokenizers for encoding), as loadTokenizer falls back to it: tests and
 * the fuzzer compare the fast path with it. Same files and errors as loadTokenizer.
 */
export async function loadReferenceTokenizer(modelDir: string | Buffer): Promise<AsrTokenizer> {
  // Imported here, not at the top: the fast path never needs it (20-30 ms of the SDK's import otherwise).
  const [vocabText, mergesText, { config, added }, { Tokenizer }] = await Promise.all([
    readModelFile(modelDir, 'vocab.json'),
    readModelFile(modelDir, 'merges.txt'),
    readConfig(modelDir),
    import('@huggingface/tokenizers'),
  ]);
  return new QwenTokenizer(Tokenizer, parseVocab(vocabText), parseMerges(mergesText), added, config);
}

/**
 * Loads the tokenizer of a Qwen3-ASR checkpoint directory (vocab.json, merges.txt, tokenizer_config.json):
 * the fast path (text/bpe.ts) with its tables from the cache file when it is valid for the files as they are
 * now, else built from them (and the cache file written); the reference library when the configuration is
 * one the fast path does not cover. Missing files raise RustAsrError 'MODEL_NOT_FOUND'; malformed ones, or
 * ones over their 16 MiB size cap, 'INVALID_TOKENIZER'; a FIFO, device or directory in their place
 * 'IO_ERROR' (nothing blocks on it). `modelDir` may be a Buffer (a path that is not valid UTF-8).
 */
export async function loadTokenizer(modelDir: string | Buffer, opts: LoadTokenizerOptions = {}): Promise<AsrTokenizer> {
  const [{ config, added }, vocabStamp, mergesStamp] = await Promise.all([
    readConfig(modelDir),
    stampOf(modelDir, 'vocab.json'),
    stampOf(modelDir, 'merges.txt'),
  ]);
  if (!fastConfig(config, added)) {
    lastTokenizerSource = 'reference';
    return loadReferenceTokenizer(modelDir);
  }
  const cachePath =
    opts.cacheDir === false ? undefined : await tokenizerCachePath(resolveCacheDir(opts.cacheDir === undefined ? {} : { cacheDir: opts.cacheDir }), modelDir);
  let tables = cachePath ? await readTablesCache(cachePath, vocabStamp, mergesStamp) : undefined;
  let source: typeof lastTokenizerSource = cachePath ? 'hit' : 'off';
  if (!tables) {
    const [vocabText, mergesText] = await Promise.all([readModelFile(modelDir, 'vocab.json'), readModelFile(modelDir, 'merges.txt')]);
    tables = buildBpeTables(parseVocab(vocabText), parseMerges(mergesText));
    if (cachePath) source = (await writeTablesCache(cachePath, tables, vocabStamp, mergesStamp)) ? 'miss' : 'unwritable';
  }
  if (!tables.eligible) {
    lastTokenizerSource = 'reference';
    return loadReferenceTokenizer(modelDir);
  }
  lastTokenizerSource = source;
  return new FastQwenTokenizer(tables, added);
}
