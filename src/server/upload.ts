// The multipart/form-data body of a transcription request, parsed while it streams in (busboy).
//
// The audio part is kept in memory up to `memoryBytes`; a larger one is moved to a file in a private
// temporary directory (mkdtemp: mode 0700, the file 0600), removed by cleanup(). The size limit is
// enforced on the bytes as they arrive: the request fails with 413 at the first byte past it.
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable, pipeline } from 'node:stream';

import busboy from 'busboy';

import { abortError } from '../core/abort.js';
import { HttpError } from './errors.js';

export interface UploadLimits {
  /** Largest audio file accepted, in bytes (413 beyond). */
  maxFileBytes: number;
  /** Audio files up to this size stay in memory; larger ones are spooled to a private temp file. */
  memoryBytes: number;
  /** Where the private temp directories are created (default os.tmpdir()). */
  tmpDir?: string;
}

/** The uploaded audio: its bytes (in memory) or the path of its temp file. */
export interface UploadedFile {
  filename: string;
  size: number;
  data?: Buffer;
  path?: string;
}

export interface Form {
  /** Text fields by name, in order (a name may repeat, e.g. `timestamp_granularities[]`). */
  fields: Map<string, string[]>;
  /** The part named `file` (undefined when absent). */
  file: UploadedFile | undefined;
  /** Removes the temp file and its directory, if any. Idempotent. */
  cleanup(): Promise<void>;
}

/** Bytes allowed in the body beyond the audio file itself (the other fields, part headers, boundaries). */
export const FORM_OVERHEAD_BYTES = 256 << 10;
const MAX_FIELD_BYTES = 64 << 10;

/** Collects a file's bytes: memory first, a private temp file once `memoryBytes` is passed. */
class Spool extends Writable {
  private chunks: Buffer[] = [];
  size = 0;
  dir: string | undefined;
  path: string | undefined;
  private fh: FileHandle | undefined;

  constructor(
    private readonly memoryBytes: number,
    private readonly tmpRoot: string,
  ) {
    super();
  }

  private async writeAll(buf: Buffer): Promise<void> {
    let off = 0;
    while (off < buf.length) off += (await this.fh!.write(buf, off, buf.length - off)).bytesWritten;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.size += chunk.length;
    if (this.fh === undefined && this.size <= this.memoryBytes) {
      this.chunks.push(chunk);
      cb();
      return;
    }
    (async () => {
      if (this.fh === undefined) {
        this.dir = await mkdtemp(join(this.tmpRoot, 'rustasr-upload-'));
        this.path = join(this.dir, 'audio');
        this.fh = await open(this.path, 'wx', 0o600);
        const held = this.chunks;
        this.chunks = [];
        for (const c of held) await this.writeAll(c);
      }
      await this.writeAll(chunk);
    })().then(() => cb(), (err: Error) => cb(err));
  }

  override _final(cb: (err?: Error | null) => void): void {
    const fh = this.fh;
    this.fh = undefined;
    if (fh === undefined) cb();
    else fh.close().then(() => cb(), (err: Error) => cb(err));
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const fh = this.fh;
    this.fh = undefined;
    if (fh === undefined) cb(err);
    else fh.close().then(() => cb(err), () => cb(err));
  }

  /** The bytes held in memory (when no temp file was needed). */
  data(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }

  async remove(): Promise<void> {
    this.chunks = [];
    if (this.fh !== undefined) await this.fh.close().catch(() => undefined);
    this.fh = undefined;
    if (this.dir !== undefined) await rm(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}

/**
 * Parses a multipart/form-data request. Rejects with HttpError 400 (not multipart, malformed or cut-off
 * body, a field over 64 KiB), 413 (the file, or the declared body, over the limit), or ABORTED when
 * `signal` fires (the client went away); any temp file is removed before it rejects.
 */
export function readForm(req: IncomingMessage, limits: UploadLimits, signal: AbortSignal): Promise<Form> {
  return new Promise<Form>((resolve, reject) => {
    const type = req.headers['content-type'] ?? '';
    if (!/^multipart\/form-data\s*;/i.test(type)) {
      reject(new HttpError(400, 'invalid_content_type', `expected a multipart/form-data body, got ${JSON.stringify(type || 'none')}`));
      return;
    }
    const tooLarge = () =>
      new HttpError(413, 'file_too_large', `the audio file exceeds the upload limit of ${limits.maxFileBytes} bytes`, 'file', {
        connection: 'close',
      });
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > limits.maxFileBytes + FORM_OVERHEAD_BYTES) {
      reject(tooLarge());
      return;
    }
    let bb: busboy.Busboy;
    try {
      bb = busboy({
        headers: req.headers,
        limits: { files: 1, fileSize: limits.maxFileBytes, fields: 64, fieldSize: MAX_FIELD_BYTES, parts: 80, headerPairs: 64 },
      });
    } catch (err) {
      reject(new HttpError(400, 'invalid_multipart', `bad multipart/form-data request: ${(err as Error).message}`));
      return;
    }
    const fields = new Map<string, string[]>();
    let spool: Spool | undefined;
    let filename = '';
    let fileDone: Promise<void> = Promise.resolve();
    let settled = false;
    const cleanup = async () => {
      await spool?.remove();
    };
    const onAbort = () => fail(abortError(signal.reason, 'the client closed the connection'));
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      req.unpipe(bb);
      // busboy may be inside its own write (a 'limit' or 'field' event): tear it down once that returns.
      queueMicrotask(() => {
        bb.removeAllListeners();
        bb.on('error', () => {});
        bb.destroy();
        spool?.destroy();
        cleanup().then(
          () => reject(err),
          () => reject(err),
        );
      });
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });

    bb.on('file', (name, stream, info) => {
      if (name !== 'file' || spool !== undefined) {
        stream.resume(); // not ours: read past it
        return;
      }
      filename = info.filename ?? '';
      const s = new Spool(limits.memoryBytes, limits.tmpDir ?? tmpdir());
      spool = s;
      stream.once('limit', () => fail(tooLarge()));
      fileDone = new Promise<void>((res) => {
        pipeline(stream, s, (err) => {
          if (err && !settled) fail(new HttpError(500, 'upload_failed', `cannot store the upload: ${err.message}`));
          res();
        });
      });
    });
    bb.on('field', (name, value, info) => {
      if (info.valueTruncated) {
        fail(new HttpError(400, 'invalid_request', `the field ${JSON.stringify(name)} is longer than ${MAX_FIELD_BYTES} bytes`, name));
        return;
      }
      const list = fields.get(name);
      if (list) list.push(value);
      else fields.set(name, [value]);
    });
    bb.on('fieldsLimit', () => fail(new HttpError(400, 'invalid_request', 'too many form fields')));
    bb.on('partsLimit', () => fail(new HttpError(400, 'invalid_request', 'too many form parts')));
    bb.on('error', (err: Error) => fail(new HttpError(400, 'invalid_multipart', `malformed multipart/form-data body: ${err.message}`)));
    bb.on('close', () => {
      void fileDone.then(() => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        const s = spool;
        const file: UploadedFile | undefined =
          s === undefined ? undefined : s.path !== undefined ? { filename, size: s.size, path: s.path } : { filename, size: s.size, data: s.data() };
        resolve({ fields, file, cleanup });
      });
    });
    req.pipe(bb);
  });
}
