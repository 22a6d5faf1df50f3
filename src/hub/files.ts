// Reading the small files of a model directory (and of the cache) without trusting them: a FIFO named
// vocab.json would block readFile() forever (and keep the process alive), a symlink to /dev/zero would be
// read until memory runs out. Every file is stat'ed first and must be a regular file under a size cap; it is
// then opened with O_NONBLOCK (so a FIFO swapped in meanwhile opens at once), fstat'ed again, and read up to
// the cap. The caps are listed in docs/errors.md.
import { constants, type Stats } from 'node:fs';
import { lstat, open, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { RustAsrError, type RustAsrErrorCode } from '../errors.js';

const MiB = 1024 * 1024;

/**
 * Size caps of the metadata files, well above the real ones (config.json ~7 KB, vocab.json 2.7 MB,
 * merges.txt 1.7 MB, tokenizer_config.json ~12 KB, the index of a sharded checkpoint ~60 KB) and low enough
 * to bound memory: building the tokenizer from a 16 MiB vocab.json peaks near 0.6 GB (the real one: 0.2 GB;
 * 32 MiB took 1.1 GB). The native engine applies the same caps to config.json, preprocessor_config.json and
 * the index (native/src/io/file.h).
 */
export const FILE_LIMITS = Object.freeze({
  /** config.json, preprocessor_config.json, generation_config.json, tokenizer_config.json, chat_template.json. */
  json: 16 * MiB,
  /** vocab.json, merges.txt. */
  tokenizer: 16 * MiB,
  /** model.safetensors.index.json. */
  index: 16 * MiB,
  /** The cache's manifest. */
  manifest: 16 * MiB,
  /** A cache lock file ({pid, host, since}). */
  lock: 64 * 1024,
});

/**
 * `dir`/`name`: a string path, or the bytes of one when `dir` is a Buffer (a path that is not valid UTF-8,
 * which a JS string cannot hold).
 */
export function childPath(dir: string | Buffer, name: string): string | Buffer {
  if (typeof dir === 'string') return join(dir, name);
  const sep = dir.length > 0 && dir[dir.length - 1] === 0x2f ? '' : '/';
  return Buffer.concat([dir, Buffer.from(sep + name, 'utf8')]);
}

/** A path for messages: a Buffer path is decoded as UTF-8, invalid bytes shown as U+FFFD. */
export function showPath(p: string | Buffer): string {
  return typeof p === 'string' ? p : p.toString('utf8');
}

/**
 * For a path that was not found: when it holds U+FFFD it probably came from bytes that are not valid UTF-8
 * (Node decodes command-line arguments and most strings as UTF-8, replacing such bytes), so the real name
 * cannot be written as a JS string. '' otherwise.
 */
export function notUtf8Hint(p: string): string {
  return p.includes('\uFFFD')
    ? ' (the name holds U+FFFD: a file name whose bytes are not valid UTF-8 was decoded lossily, e.g. from the command line; ' +
        'rename it, or in the API pass the path as a Buffer (a model directory) or fs.createReadStream(Buffer) (audio))'
    : '';
}

/** "a FIFO", "a directory", ... for a non-regular file. */
export function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

export interface ReadRegularOptions {
  /** Largest accepted size in bytes. */
  maxBytes: number;
  /** What the file is, for the over-the-cap message ("vocab.json"). */
  label: string;
  /** Code of the over-the-cap error (INVALID_CONFIG, INVALID_TOKENIZER, ...). */
  tooLargeCode: RustAsrErrorCode;
  /** Refuse a symbolic link instead of following it (files inside the download cache). */
  noFollow?: boolean;
  /** Code and message of a missing file; absent: a missing file resolves to undefined. */
  missing?: { code: RustAsrErrorCode; message: string };
}

function notRegular(path: string, st: Stats): RustAsrError {
  return new RustAsrError('IO_ERROR', `${path} is not a regular file (${fileKind(st)})`);
}

function tooLarge(path: string, n: number, o: ReadRegularOptions): RustAsrError {
  return new RustAsrError(o.tooLargeCode, `${path}: ${n} bytes is over the ${o.maxBytes}-byte limit for ${o.label}`);
}

function ioError(path: string, err: unknown): RustAsrError {
  return new RustAsrError('IO_ERROR', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Checks that `path` is a regular file (following symlinks unless noFollow) without opening it. Resolves
 * to its Stats, or undefined when it does not exist and `missing` is not given.
 */
export async function statRegularFile(
  path: string | Buffer,
  o: Pick<ReadRegularOptions, 'noFollow' | 'missing'> = {},
): Promise<Stats | undefined> {
  const shown = showPath(path);
  let st: Stats;
  try {
    st = o.noFollow ? await lstat(path) : await stat(path);
  } catch (err) {
    if (isMissing(err)) {
      if (o.missing) throw new RustAsrError(o.missing.code, o.missing.message, { cause: err });
      return undefined;
    }
    throw ioError(shown, err);
  }
  if (!st.isFile()) throw notRegular(shown, st);
  return st;
}

/**
 * Reads a regular file of at most o.maxBytes whole. A FIFO, socket, device or directory is IO_ERROR at once
 * (nothing is opened for reading in a way that could block); a larger file is o.tooLargeCode from its size,
 * before it is read. Resolves to undefined for a missing file when o.missing is not given.
 */
export async function readRegularFile(path: string | Buffer, o: ReadRegularOptions): Promise<Buffer | undefined> {
  const shown = showPath(path);
  const st = await statRegularFile(path, o);
  if (!st) return undefined;
  if (st.size > o.maxBytes) throw tooLarge(shown, st.size, o);
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | (o.noFollow ? constants.O_NOFOLLOW : 0));
  } catch (err) {
    if (isMissing(err)) {
      if (o.missing) throw new RustAsrError(o.missing.code, o.missing.message, { cause: err });
      return undefined;
    }
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new RustAsrError('IO_ERROR', `${shown} is not a regular file (a symbolic link)`, { cause: err });
    throw ioError(shown, err);
  }
  try {
    const fst = await fh.stat();
    if (!fst.isFile()) throw notRegular(shown, fst);
    if (fst.size > o.maxBytes) throw tooLarge(shown, fst.size, o);
    // Read to the end, never past the cap (a file that grew since the stat is refused as well).
    const parts: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.max(1, Math.min(fst.size - total, o.maxBytes - total) + 1, 64 * 1024));
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > o.maxBytes) throw tooLarge(shown, total, o);
      parts.push(chunk.subarray(0, bytesRead));
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, total);
  } catch (err) {
    if (err instanceof RustAsrError) throw err;
    throw ioError(shown, err);
  } finally {
    await fh.close();
  }
}
