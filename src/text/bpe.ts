// The fast path of the Qwen tokenizer: byte-level BPE over compact tables (typed arrays), built once from a
// checkpoint's vocab.json + merges.txt and cached on disk in a validated binary form (text/tokenizer-cache.ts),
// so that a process maps a few typed arrays instead of parsing 4.5 MB of JSON and text and building
// 300k-entry JavaScript maps (~0.4 s of a core on the reference VM, in competition with the encoder).
//
// @huggingface/tokenizers stays the source of truth: the encoding here is the same pipeline (added tokens
// matched first, leftmost-longest; NFC; the Qwen2 split regex as that library compiles it, Isolated; byte-level;
// BPE by lowest merge rank, leftmost first on ties), and test/tokenizer.test.ts checks it against the library
// on the fuzz corpus. Configurations the fast path does not cover (added tokens with lstrip / rstrip /
// single_word / normalized, split_special_tokens, a merge whose parts or result are missing from the
// vocabulary, ids of 2^18 and more) report `eligible = false`, and the tokenizer uses the library instead.

/** Ids are packed in 18 bits in a merge key (the Qwen vocabulary has 151,643). */
const ID_BITS = 18;
const ID_LIMIT = 1 << ID_BITS;

/** The tables of one vocabulary (no added tokens: those come from tokenizer_config.json at every load). */
export interface BpeTables {
  /** One past the highest vocabulary id. */
  readonly size: number;
  /** The raw bytes of id i are blob[offsets[i] .. offsets[i + 1]) (empty for ids absent from vocab.json). */
  readonly offsets: Uint32Array;
  readonly blob: Uint8Array;
  /** The id of the single-byte token for each byte value, -1 when the vocabulary has none. */
  readonly byteIds: Int32Array;
  /** Merges sorted by key = left * 2^18 + right: their rank (line order in merges.txt) and merged id. */
  readonly mergeKeys: Float64Array;
  readonly mergeRanks: Uint32Array;
  readonly mergeResults: Uint32Array;
  /** False when the fast path cannot reproduce the library on this vocabulary (see above). */
  readonly eligible: boolean;
}

/**
 * GPT-2 byte-level alphabet: byte b maps to a printable code point. Printable Latin-1 bytes map to
 * themselves; the remaining 68 bytes map, in increasing order, to U+0100, U+0101, ...
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = new Array<string>(256);
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(printable(b) ? b : 256 + extra++);
  return out;
})();

/** Code point -> byte of the alphabet above. */
export const CHAR_TO_BYTE: ReadonlyMap<number, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c.codePointAt(0) as number, b]));
/** The same as a table over UTF-16 code units 0 .. 0x143 (-1: not in the alphabet). */
const UNIT_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(0x144).fill(-1);
  for (const [cp, b] of CHAR_TO_BYTE) t[cp] = b;
  return t;
})();

const utf8 = new TextEncoder();

/** The raw bytes a byte-level vocabulary token stands for (a character outside the alphabet keeps its UTF-8). */
export function tokenStringBytes(tok: string): Uint8Array {
  const out: number[] = [];
  for (const ch of tok) {
    const b = CHAR_TO_BYTE.get(ch.codePointAt(0) as number);
    if (b !== undefined) out.push(b);
    else for (const x of utf8.encode(ch)) out.push(x);
  }
  return Uint8Array.from(out);
}

/** The byte-level token string of raw bytes (inverse of tokenStringBytes for alphabet-only tokens). */
export function bytesTokenString(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += BYTE_TO_CHAR[b] as string;
  return s;
}

/**
 * Builds the tables from a parsed vocab.json and merges.txt (in file order). Token strings made only of the
 * byte-level alphabet are stored as their raw bytes; any other token makes the tables ineligible (the
 * library would treat its characters as text).
 */
export function buildBpeTables(vocab: Record<string, number>, merges: readonly (readonly [string, string])[]): BpeTables {
  let eligible = true;
  let size = 0;
  const entries = Object.entries(vocab);
  for (const [, id] of entries) size = Math.max(size, id + 1);
  if (size > ID_LIMIT) eligible = false;
  const bytesOf: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(size);
  let total = 0;
  for (const [tok, id] of entries) {
    // Alphabet-only tokens (all of a byte-level vocabulary): one byte per UTF-16 unit, by table.
    let b: Uint8Array | undefined = new Uint8Array(tok.length);
    for (let i = 0; i < tok.length; i++) {
      const u = tok.charCodeAt(i);
      const x = u < 0x144 ? (UNIT_TO_BYTE[u] as number) : -1;
      if (x < 0) {
        b = undefined;
        break;
      }
      b[i] = x;
    }
    if (!b) {
      eligible = false;
      b = tokenStringBytes(tok);
    }
    if (bytesOf[id] !== undefined) eligible = false; // two tokens for one id
    bytesOf[id] = b;
    total += b.length;
  }
  const offsets = new Uint32Array(size + 1);
  const blob = new Uint8Array(total);
  let off = 0;
  for (let id = 0; id < size; id++) {
    offsets[id] = off;
    const b = bytesOf[id];
    if (b) {
      blob.set(b, off);
      off += b.length;
    }
  }
  offsets[size] = off;
  const byteIds = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) {
    const c = BYTE_TO_CHAR[b] as string;
    if (Object.hasOwn(vocab, c)) byteIds[b] = vocab[c] as number;
  }
  const ids = new Map<string, number>(entries);
  const n = merges.length;
  const lefts = new Int32Array(n), rights = new Int32Array(n), results = new Int32Array(n);
  let m = 0;
  for (let rank = 0; rank < n; rank++) {
    const [a, b] = merges[rank] as readonly [string, string];
    const ia = ids.get(a), ib = ids.get(b), ir = ids.get(a + b);
    if (ia === undefined || ib === undefined || ir === undefined) {
      eligible = false; // the library would merge strings the id tables cannot represent
      lefts[rank] = -1;
      continue;
    }
    lefts[rank] = ia;
    rights[rank] = ib;
    results[rank] = ir;
    m++;
  }
  // Sort by (left, right): counting sort on the left id, then each (small) bucket by the right id; merges.txt
  // order (the rank) is kept within equal pairs, and only the first of a repeated pair is kept (the library's
  // rank map keeps the first too).
  const start = new Int32Array(size + 1);
  for (let r = 0; r < n; r++) {
    const a = lefts[r] as number;
    if (a >= 0) start[a + 1] = (start[a + 1] as number) + 1;
  }
  for (let i = 0; i < size; i++) start[i + 1] = (start[i + 1] as number) + (start[i] as number);
  const fill = start.slice();
  const order = new Int32Array(m);
  for (let r = 0; r < n; r++) {
    const a = lefts[r] as number;
    if (a >= 0) {
      const at = fill[a] as number;
      order[at] = r;
      fill[a] = at + 1;
    }
  }
  for (let a = 0; a < size; a++) {
    const lo = start[a] as number, hi = start[a + 1] as number;
    for (let i = lo + 1; i < hi; i++) {
      const r = order[i] as number, key = rights[r] as number;
      let j = i - 1;
      while (j >= lo && ((rights[order[j] as number] as number) > key || ((rights[order[j] as number] as number) === key && (order[j] as number) > r))) {
        order[j + 1] = order[j] as number;
        j--;
      }
      order[j + 1] = r;
    }
  }
  const mergeKeys = new Float64Array(m), mergeRanks = new Uint32Array(m), mergeResults = new Uint32Array(m);
  let k = 0;
  for (let i = 0; i < m; i++) {
    const r = order[i] as number;
    const key = (lefts[r] as number) * ID_LIMIT + (rights[r] as number);
    if (k > 0 && mergeKeys[k - 1] === key) continue; // a repeated pair: the first rank stays
    mergeKeys[k] = key;
    mergeRanks[k] = r;
    mergeResults[k] = results[r] as number;
    k++;
  }
  if (k < m) {
    return { size, offsets, blob, byteIds, mergeKeys: mergeKeys.slice(0, k), mergeRanks: mergeRanks.slice(0, k), mergeResults: mergeResults.slice(0, k), eligible };
  }
  return { size, offsets, blob, byteIds, mergeKeys, mergeRanks, mergeResults, eligible };
}

/**
 * The Split pre-tokenizer regex of Qwen2 (`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
 * ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`) as @huggingface/tokenizers compiles it for
 * JavaScript: the inline case-insensitive group folds ASCII letters only, `\s` is Unicode White_Space (not
 * JavaScript's \s: U+0085 is white space, U+FEFF is not), flags `gu`.
 */
export const QWEN2_SPLIT_JS =
  /(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\p{White_Space}\p{L}\p{N}]+[\r\n]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/** Byte-level BPE encoder over BpeTables; added tokens are matched first (leftmost-longest), as the library does. */
export class FastBpe {
  private readonly cache = new Map<string, number[]>();
  private readonly addedRe: RegExp | undefined;
  private readonly addedIds: Map<string, number>;

  constructor(
    private readonly t: BpeTables,
    added: readonly { content: string; id: number }[],
  ) {
    this.addedIds = new Map(added.map((a) => [a.content, a.id]));
    const contents = [...this.addedIds.keys()].sort((a, b) => b.length - a.length || (a < b ? -1 : a > b ? 1 : 0));
    this.addedRe =
      contents.length === 0 ? undefined : new RegExp(contents.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'gu');
  }

  /** Ids of `text` (no template or special tokens added). */
  encode(text: string): number[] {
    const out: number[] = [];
    if (text === '') return out;
    if (!this.addedRe) {
      this.encodeSegment(text, out);
      return out;
    }
    this.addedRe.lastIndex = 0;
    let last = 0;
    for (let m = this.addedRe.exec(text); m !== null; m = this.addedRe.exec(text)) {
      if (m.index > last) this.encodeSegment(text.slice(last, m.index), out);
      out.push(this.addedIds.get(m[0]) as number);
      last = m.index + m[0].length;
    }
    if (last < text.length) this.encodeSegment(text.slice(last), out);
    return out;
  }

  private encodeSegment(segment: string, out: number[]): void {
    const norm = segment.normalize('NFC');
    const re = new RegExp(QWEN2_SPLIT_JS.source, QWEN2_SPLIT_JS.flags);
    let last = 0;
    for (let m = re.exec(norm); m !== null; m = re.exec(norm)) {
      if (m[0].length === 0) {
        re.lastIndex++;
        continue;
      }
      if (m.index > last) this.encodePiece(norm.slice(last, m.index), out);
      this.encodePiece(m[0], out);
      last = m.index + m[0].length;
    }
    if (last < norm.length) this.encodePiece(norm.slice(last), out);
  }

  private encodePiece(piece: string, out: number[]): void {
    const cached = this.cache.get(piece);
    if (cached) {
      for (const id of cached) out.push(id);
      return;
    }
    const ids = this.bpe(utf8.encode(piece));
    if (piece.length < 256) {
      if (this.cache.size >= 10_000) this.cache.clear();
      this.cache.set(piece, ids);
    }
    for (const id of ids) out.push(id);
  }

  /** Merge lookup: the index of key in mergeKeys, or -1. */
  private find(left: number, right: number): number {
    const keys = this.t.mergeKeys;
    const key = left * ID_LIMIT + right;
    let lo = 0, hi = keys.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const k = keys[mid] as number;
      if (k < key) lo = mid + 1;
      else if (k > key) hi = mid - 1;
      else return mid;
    }
    return -1;
  }

  /**
   * BPE of one piece's bytes: repeatedly merges the adjacent pair of lowest rank (on equal ranks the leftmost),
   * with a binary heap of candidate pairs keyed by rank * 2^32 + position of the left symbol, each checked
   * against the current symbols when popped.
   */
  private bpe(bytes: Uint8Array): number[] {
    const n = bytes.length;
    const sym = new Int32Array(n), next = new Int32Array(n), prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      // A byte without a token stays a symbol of its own (-2 - byte) that no merge involves, and is dropped
      // from the output, as the library drops a token missing from the vocabulary (unk_token is null).
      const id = this.t.byteIds[bytes[i] as number] as number;
      sym[i] = id >= 0 ? id : -2 - (bytes[i] as number);
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    if (n === 1) return (sym[0] as number) >= 0 ? [sym[0] as number] : [];
    // Heap entries: [score, left position, left id, right id].
    const heap: number[][] = [];
    const push = (e: number[]): void => {
      heap.push(e);
      let i = heap.length - 1;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if ((heap[p] as number[])[0] as number <= (e[0] as number)) break;
        heap[i] = heap[p] as number[];
        i = p;
      }
      heap[i] = e;
    };
    const pop = (): number[] => {
      const top = heap[0] as number[];
      const last = heap.pop() as number[];
      if (heap.length > 0) {
        let i = 0;
        for (;;) {
          const l = 2 * i + 1, r = l + 1;
          let s = i;
          let sv = last[0] as number;
          if (l < heap.length && ((heap[l] as number[])[0] as number) < sv) {
            s = l;
            sv = (heap[l] as number[])[0] as number;
          }
          if (r < heap.length && ((heap[r] as number[])[0] as number) < sv) s = r;
          if (s === i) break;
          heap[i] = heap[s] as number[];
          i = s;
        }
        heap[i] = last;
      }
      return top;
    };
    const consider = (i: number): void => {
      const j = next[i] as number;
      if (j < 0 || (sym[i] as number) < 0 || (sym[j] as number) < 0) return;
      const k = this.find(sym[i] as number, sym[j] as number);
      if (k >= 0) push([(this.t.mergeRanks[k] as number) * 4294967296 + i, i, sym[i] as number, sym[j] as number]);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.length > 0) {
      const [, i, a, b] = pop() as [number, number, number, number];
      const j = next[i] as number;
      // Stale: the left symbol was merged away or changed, or its right neighbour changed.
      if (sym[i] !== a || j < 0 || sym[j] !== b) continue;
      const k = this.find(a, b);
      sym[i] = this.t.mergeResults[k] as number;
      sym[j] = -1;
      const jn = next[j] as number;
      next[i] = jn;
      if (jn >= 0) prev[jn] = i;
      if ((prev[i] as number) >= 0) consider(prev[i] as number);
      consider(i);
    }
    const ids: number[] = [];
    for (let i = 0; i >= 0; i = next[i] as number) if ((sym[i] as number) >= 0) ids.push(sym[i] as number);
    return ids;
  }
}
