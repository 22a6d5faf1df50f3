// The error every aborted operation fails with: a RustAsrError with code 'ABORTED' whose name is
// 'AbortError' (the name DOM and Node APIs use for cancellation), carrying the signal's reason as cause.
import { RustAsrError } from '../errors.js';

/** Creates the ABORTED error (`name === 'AbortError'`, `code === 'ABORTED'`). */
export function abortError(reason?: unknown, message = 'transcription aborted'): RustAsrError {
  const err = new RustAsrError('ABORTED', message, reason === undefined ? undefined : { cause: reason });
  Object.defineProperty(err, 'name', { value: 'AbortError', enumerable: false, configurable: true, writable: false });
  return err;
}

/** True for the ABORTED error of any rustasr operation. */
export function isAbortError(err: unknown): boolean {
  return err instanceof RustAsrError && err.code === 'ABORTED';
}
