// The on-disk form of a checkpoint's BPE tables (text/bpe.ts): `<cache root>/tokenizer/<16 hex>.rtok`, one file
// per model directory (the name hashes its real path), so that a process reads one file and views it as typed
// arrays instead of parsing vocab.json and merges.txt.
//
// Validation. The header records, for vocab.json and merges.txt, the size, the modification time (ns) and the
// inode the tables were built from, and an FNV-1a checksum of the payload; a file whose header does not match
// the sources as they are now (another checkpoint, an edited or replaced file), whose size is not the one its
// header implies, or whose checksum fails is ignored and rebuilt. Writes go to a temporary file in the same
// directory, renamed over the old one, so a reader sees a whole old file or a whole new one. A cache that
// cannot be read or written is never an error: the tables are then built from the sources.

import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, realpath, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

import type { BpeTables } from './bpe.js';

const MAGIC = 0x4b4f5452; // 'RTOK'
const VERSION = 1;
const HEADER_WORDS = 32; // 128 bytes

/** What identifies a source file: its size, modification time (ns) and inode. */
export interface SourceStamp {
  size: number;
  mtimeNs: bigint;
  ino: bigint;
}

/** The cache file of a model directory under `root`. */
export async function tokenizerCachePath(root: string, modelDir: string | Buffer): Promise<string> {
  let real: string | Buffer = modelDir;
  try {
    real = await realpath(modelDir);
  } catch {
    // keep the given path
  }
  const h = createHash('sha256').update(typeof real === 'string' ? Buffer.from(real, 'utf8') : real).digest('hex');
  return join(root, 'tokenizer', `${h.slice(0, 16)}.rtok`);
}

/** FNV-1a (32-bit) over 32-bit words. */
function fnv(words: Uint32Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ (words[i] as number), 0x01000193) >>> 0;
  return h;
}

const pad8 = (n: number): number => (n + 7) & ~7;

interface Layout {
  offsets: number;
  blob: number;
  byteIds: number;
  keys: number;
  ranks: number;
  results: number;
  end: number;
}

function layout(size: number, blobBytes: number, merges: number): Layout {
  const offsets = HEADER_WORDS * 4;
  const blob = pad8(offsets + (size + 1) * 4);
  const byteIds = pad8(blob + blobBytes);
  const keys = pad8(byteIds + 256 * 4);
  const ranks = keys + merges * 8;
  const results = ranks + merges * 4;
  const end = pad8(results + merges * 4);
  return { offsets, blob, byteIds, keys, ranks, results, end };
}

function writeStamp(h: DataView, at: number, s: SourceStamp): void {
  h.setFloat64(at, s.size, true);
  h.setBigUint64(at + 8, s.mtimeNs, true);
  h.setBigUint64(at + 16, s.ino, true);
}
function stampEquals(h: DataView, at: number, s: SourceStamp): boolean {
  return h.getFloat64(at, true) === s.size && h.getBigUint64(at + 8, true) === s.mtimeNs && h.getBigUint64(at + 16, true) === s.ino;
}

/** The file's bytes for `t` built from sources `vocab` and `merges`. */
export function serializeTables(t: BpeTables, vocab: SourceStamp, merges: SourceStamp): Buffer {
  const m = t.mergeKeys.length;
  const L = layout(t.size, t.blob.length, m);
  const buf = new ArrayBuffer(L.end);
  const bytes = new Uint8Array(buf);
  new Uint32Array(buf, L.offsets, t.size + 1).set(t.offsets);
  bytes.set(t.blob, L.blob);
  new Int32Array(buf, L.byteIds, 256).set(t.byteIds);
  new Float64Array(buf, L.keys, m).set(t.mergeKeys);
  new Uint32Array(buf, L.ranks, m).set(t.mergeRanks);
  new Uint32Array(buf, L.results, m).set(t.mergeResults);
  const h = new DataView(buf, 0, HEADER_WORDS * 4);
  h.setUint32(0, MAGIC, true);
  h.setUint32(4, VERSION, true);
  h.setUint32(8, t.size, true);
  h.setUint32(12, t.blob.length, true);
  h.setUint32(16, m, true);
  h.setUint32(20, t.eligible ? 1 : 0, true);
  h.setFloat64(24, L.end, true);
  writeStamp(h, 32, vocab);
  writeStamp(h, 56, merges);
  h.setUint32(80, fnv(new Uint32Array(buf, HEADER_WORDS * 4, (L.end - HEADER_WORDS * 4) / 4)), true);
  return Buffer.from(buf);
}

/** The tables of a cache file's bytes, or undefined when they are not a valid file for these sources. */
export function parseTables(file: Buffer, vocab: SourceStamp, merges: SourceStamp): BpeTables | undefined {
  if (file.length < HEADER_WORDS * 4 || file.byteOffset % 8 !== 0) {
    // Typed-array views need an aligned start: copy (Buffer pools may hand out unaligned slices).
    if (file.length < HEADER_WORDS * 4) return undefined;
    file = Buffer.from(new Uint8Array(file));
  }
  const buf = file.buffer;
  const base = file.byteOffset;
  const h = new DataView(buf, base, HEADER_WORDS * 4);
  if (h.getUint32(0, true) !== MAGIC || h.getUint32(4, true) !== VERSION) return undefined;
  if (!stampEquals(h, 32, vocab) || !stampEquals(h, 56, merges)) return undefined;
  const size = h.getUint32(8, true), blobBytes = h.getUint32(12, true), m = h.getUint32(16, true);
  const L = layout(size, blobBytes, m);
  if (h.getFloat64(24, true) !== L.end || file.length !== L.end) return undefined;
  if (fnv(new Uint32Array(buf, base + HEADER_WORDS * 4, (L.end - HEADER_WORDS * 4) / 4)) !== h.getUint32(80, true)) return undefined;
  const offsets = new Uint32Array(buf, base + L.offsets, size + 1);
  // Structure: offsets ascend within the blob, byte ids and merge results are ids, keys ascend.
  if (offsets[0] !== 0 || offsets[size] !== blobBytes) return undefined;
  for (let i = 0; i < size; i++) if ((offsets[i] as number) > (offsets[i + 1] as number)) return undefined;
  const byteIds = new Int32Array(buf, base + L.byteIds, 256);
  for (const id of byteIds) if (id < -1 || id >= size) return undefined;
  const mergeKeys = new Float64Array(buf, base + L.keys, m);
  const mergeResults = new Uint32Array(buf, base + L.results, m);
  for (let i = 0; i < m; i++) {
    if ((mergeResults[i] as number) >= size) return undefined;
    if (i > 0 && !((mergeKeys[i - 1] as number) < (mergeKeys[i] as number))) return undefined;
  }
  return {
    size,
    offsets,
    blob: new Uint8Array(buf, base + L.blob, blobBytes),
    byteIds,
    mergeKeys,
    mergeRanks: new Uint32Array(buf, base + L.ranks, m),
    mergeResults,
    eligible: h.getUint32(20, true) === 1,
  };
}

/** Reads and validates the cache file; undefined when absent, stale or damaged. */
export async function readTablesCache(path: string, vocab: SourceStamp, merges: SourceStamp): Promise<BpeTables | undefined> {
  let file: Buffer;
  try {
    file = await readFile(path);
  } catch {
    return undefined;
  }
  return parseTables(file, vocab, merges);
}

/** Writes the cache file atomically (a temporary file renamed over it). Failures are swallowed: returns false. */
export async function writeTablesCache(path: string, t: BpeTables, vocab: SourceStamp, merges: SourceStamp): Promise<boolean> {
  const dir = join(path, '..');
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await mkdir(dir, { recursive: true });
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(serializeTables(t, vocab, merges));
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    return true;
  } catch {
    await rm(tmp, { force: true }).catch(() => undefined);
    return false;
  }
}
