// Streaming .safetensors writer: the header first, then every tensor's bytes generated slice by slice into two
// bounded buffers (one being filled while the other is written), so a multi-gigabyte file never sits in memory.
import { open, rename, rm, type FileHandle } from 'node:fs/promises';

/** Element size in bytes of the safetensors dtypes this writer accepts. */
const DTYPE_BYTES = {
  BF16: 2,
  F16: 2,
  F32: 4,
  F64: 8,
  I8: 1,
  U8: 1,
  I16: 2,
  U16: 2,
  I32: 4,
  U32: 4,
  I64: 8,
  U64: 8,
} as const;

export type SafetensorsDType = keyof typeof DTYPE_BYTES;

/**
 * Fills `chunk` with the tensor's bytes starting at byte `offset` of that tensor. Calls for one tensor come in
 * order, cover it exactly once, and every chunk starts on an element boundary and holds whole elements; the
 * chunk's byteOffset is a multiple of 8, so typed-array views over it (e.g. Uint16Array for BF16) are valid.
 */
export type TensorFiller = (chunk: Uint8Array, offset: number) => void;

export interface TensorSource {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  fill: TensorFiller;
}

export interface WriteProgress {
  bytesWritten: number;
  totalBytes: number;
  /** The tensor being generated when this progress report was made. */
  tensor: string;
}

export interface WriteSafetensorsOptions {
  /** String-to-string `__metadata__` entry written first in the header (default {format: 'pt'}). */
  metadata?: Record<string, string>;
  /** Size of each of the two staging buffers, rounded down to a multiple of 8 (default 16 MiB, minimum 8). */
  bufferBytes?: number;
  /** The data section starts at a multiple of this (header padded with spaces); a multiple of 8 (default 8). */
  dataAlign?: number;
  /** Called after each buffer handed to the file system, and once at the end. */
  onProgress?: (p: WriteProgress) => void;
}

export interface WriteSafetensorsResult {
  path: string;
  /** Whole file size. */
  bytes: number;
  /** Header length as stored in the first 8 bytes (JSON plus padding). */
  headerBytes: number;
  tensors: number;
}

export const DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024;

function numelOf(name: string, shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`tensor ${name}: bad dimension ${String(d)} in shape`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new Error(`tensor ${name}: too many elements`);
  return n;
}

/** The header bytes (JSON padded with spaces to `dataAlign`, length prefix excluded) and each tensor's byte size. */
export function buildHeader(
  tensors: readonly Pick<TensorSource, 'name' | 'dtype' | 'shape'>[],
  metadata: Record<string, string> = { format: 'pt' },
  dataAlign = 8,
): { json: Buffer; sizes: number[]; dataBytes: number } {
  if (!Number.isInteger(dataAlign) || dataAlign < 8 || dataAlign % 8 !== 0) {
    throw new Error(`dataAlign must be a positive multiple of 8, got ${String(dataAlign)}`);
  }
  const header: Record<string, unknown> = { __metadata__: metadata };
  const sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(header, t.name)) {
      throw new Error(`duplicate or reserved tensor name ${t.name}`);
    }
    const elem = DTYPE_BYTES[t.dtype];
    if (elem === undefined) throw new Error(`tensor ${t.name}: unsupported dtype ${String(t.dtype)}`);
    const size = numelOf(t.name, t.shape) * elem;
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + size] };
    sizes.push(size);
    offset += size;
  }
  const raw = Buffer.from(JSON.stringify(header), 'utf8');
  // The data section starts at 8 + header length; pad the JSON with trailing spaces to align it.
  const padded = Math.ceil((8 + raw.length) / dataAlign) * dataAlign - 8;
  const json = Buffer.alloc(padded, 0x20);
  raw.copy(json);
  return { json, sizes, dataBytes: offset };
}

async function writeFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

/**
 * Writes a .safetensors file whose tensor bytes come from the sources' fillers, in the given order (which is
 * also the header order and the data order). Memory use is two staging buffers whatever the file size.
 * The file is written under a temporary name next to `path` and renamed into place when complete.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorSource[],
  opts: WriteSafetensorsOptions = {},
): Promise<WriteSafetensorsResult> {
  const bufferBytes = Math.max(8, Math.floor((opts.bufferBytes ?? DEFAULT_BUFFER_BYTES) / 8) * 8);
  const { json, sizes, dataBytes } = buildHeader(tensors, opts.metadata, opts.dataAlign);
  const dataStart = 8 + json.length;
  const totalBytes = dataStart + dataBytes;

  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w');
  let ok = false;
  const pending: { spareWrite?: Promise<void> } = {};
  try {
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    await writeFully(fh, Buffer.concat([prefix, json]), 0);

    let fillBuf = new Uint8Array(bufferBytes); // being filled
    let spareBuf = new Uint8Array(bufferBytes); // being written (spareWrite), or idle
    let used = 0; // bytes filled in fillBuf
    let filePos = dataStart; // file position of fillBuf's first byte
    let written = dataStart;
    let current = '';

    const flush = async (): Promise<void> => {
      if (used === 0) return;
      const len = used;
      const p = writeFully(fh, fillBuf.subarray(0, len), filePos).then(() => {
        written += len;
        opts.onProgress?.({ bytesWritten: written, totalBytes, tensor: current });
      });
      p.catch(() => undefined); // awaited below; this only keeps a failure from being reported as unhandled
      filePos += len;
      used = 0;
      [fillBuf, spareBuf] = [spareBuf, fillBuf];
      // The buffer to fill next may still be in flight from the previous flush.
      const prev = pending.spareWrite;
      pending.spareWrite = p;
      if (prev) await prev;
    };

    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const size = sizes[i]!;
      const elem = DTYPE_BYTES[t.dtype];
      current = t.name;
      let off = 0;
      while (off < size) {
        // Whole elements only; an element never straddles two buffers (every dtype size divides 8).
        const room = Math.floor((bufferBytes - used) / elem) * elem;
        const n = Math.min(size - off, room);
        t.fill(fillBuf.subarray(used, used + n), off);
        used += n;
        off += n;
        if (used + elem > bufferBytes) await flush();
      }
      // Keep every later chunk's start 8-aligned within the buffer (for typed-array views).
      if (used % 8 !== 0) {
        // Not possible to pad inside the file (data must be contiguous): flush instead, so the next chunk starts at 0.
        await flush();
      }
    }
    await flush();
    if (pending.spareWrite) await pending.spareWrite;
    ok = true;
  } finally {
    if (pending.spareWrite) await pending.spareWrite.catch(() => undefined); // never close the file under an in-flight write
    await fh.close().catch(() => undefined);
    if (!ok) await rm(tmp, { force: true }).catch(() => undefined);
  }
  await rename(tmp, path);
  opts.onProgress?.({ bytesWritten: totalBytes, totalBytes, tensor: '' });
  return { path, bytes: totalBytes, headerBytes: json.length, tensors: tensors.length };
}
