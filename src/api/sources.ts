// Byte sources of the API's inputs.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';

import { RustAsrError } from '../errors.js';
import { notUtf8Hint } from '../model/files.js';

/** A stream of a file's bytes whose open/read errors become RustAsrError IO_ERROR. */
export function fileSource(path: string): Readable {
  return Readable.from(
    (async function* () {
      try {
        for await (const chunk of createReadStream(path)) yield chunk as Buffer;
      } catch (err) {
        throw new RustAsrError('IO_ERROR', `cannot read ${path}: ${(err as Error).message}${notUtf8Hint(path)}`, { cause: err });
      }
    })(),
    { objectMode: false },
  );
}
