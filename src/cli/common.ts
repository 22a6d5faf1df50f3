// What every rustasr command shares: exit codes, usage errors, option parsing, error reporting, and the
// quiet exit when the reader of stdout goes away (EPIPE).
import { availableParallelism } from 'node:os';

import { RustAsrError } from '../errors.js';

/** The model `infer`, `listen` and `serve` use when --model is not given (downloaded into the cache on first use). */
export const DEFAULT_MODEL = 'Qwen/Qwen3-ASR-0.6B';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** Exit status when stdout's reader went away: what a shell reports for `cat` in the same place (128 + SIGPIPE). */
export const EXIT_EPIPE = 141;

/** A bad command line: exit code 2. */
export class UsageError extends RustAsrError {
  constructor(message: string) {
    super('INVALID_OPTION', message);
  }
}

/** Error codes that mean the command line was wrong (exit code 2). */
const USAGE_CODES = new Set(['INVALID_OPTION', 'UNSUPPORTED_LANGUAGE']);

export function exitCodeOf(err: unknown): number {
  return err instanceof RustAsrError && USAGE_CODES.has(err.code) ? EXIT_USAGE : EXIT_FAILURE;
}

/** Prints `rustasr: CODE: message` (with an optional prefix such as the file name) and sets the exit code. */
export function report(err: unknown, prefix = ''): void {
  const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String((err as Error)?.stack ?? err));
  process.stderr.write(`rustasr: ${prefix}${e.code}: ${e.message}\n`);
  process.exitCode = Math.max(Number(process.exitCode ?? 0), exitCodeOf(e));
}

export function usage(message: string): never {
  throw new UsageError(message);
}

// ---- option values (mri hands out strings, numbers, or true for a flag without a value) -------------------

export function stringOpt(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v)) usage(`--${name} was given more than once`);
  if (typeof v === 'number') return String(v); // mri turns numeric-looking values into numbers
  if (typeof v !== 'string' || v === '') usage(`--${name} needs a value`);
  return v;
}

export function enumOpt<T extends string>(name: string, v: unknown, allowed: readonly T[]): T | undefined {
  const s = stringOpt(name, v);
  if (s === undefined) return undefined;
  if (!allowed.includes(s as T)) usage(`--${name} must be one of ${allowed.join(', ')}, got ${s}`);
  return s as T;
}

function toNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '') return Number(v);
  return NaN;
}

/** An integer flag in [min, max]. */
export function intOpt(name: string, v: unknown, min: number, max: number, why = ''): number | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v)) usage(`--${name} was given more than once`);
  const n = toNumber(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    usage(`--${name} must be an integer from ${min} to ${max}${why}, got ${v === true ? 'no value' : String(v)}`);
  }
  return n;
}

/** A number flag in (0, max] (or [min, max] when min is given). */
export function numberOpt(name: string, v: unknown, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v)) usage(`--${name} was given more than once`);
  const n = toNumber(v);
  if (!(Number.isFinite(n) && n >= min && n <= max)) usage(`--${name} must be a number from ${min} to ${max}, got ${v === true ? 'no value' : String(v)}`);
  return n;
}

/** Most CPU threads --threads accepts: the hardware threads here (0 means all of them). */
export function maxThreads(): number {
  return availableParallelism();
}

/**
 * mri (sade's parser) reads `--threads -1` as the flag `-1`. Values that look like negative numbers are
 * joined to the value-taking option before them (`--threads=-1`), so they reach validation.
 */
export function joinNegativeValues(argv: string[], valueFlags: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    if (valueFlags.has(a) && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

// ---- stdout whose reader may go away -------------------------------------------------------------------

/**
 * Watches a stream for EPIPE (the reader of a pipe exited, as `head` does): `onClose` runs once, and the
 * error is not thrown. Returns a function that says whether it happened.
 */
export function watchEpipe(stream: NodeJS.WritableStream, onClose: () => void): () => boolean {
  let closed = false;
  epipeWatchers++;
  (stream as NodeJS.EventEmitter).on('error', (err: NodeJS.ErrnoException) => {
    if (closed) return;
    closed = true;
    if (err.code !== 'EPIPE') process.stderr.write(`rustasr: IO_ERROR: cannot write the output: ${err.message}\n`);
    onClose();
  });
  return () => closed;
}

let epipeWatchers = 0;

/**
 * For commands without their own watcher: an EPIPE on stdout ends the process quietly with EXIT_EPIPE (the
 * commands that hold native work, infer, watch stdout themselves and stop that work first).
 */
export function exitQuietlyOnEpipe(stream: NodeJS.WritableStream): void {
  (stream as NodeJS.EventEmitter).on('error', (err: NodeJS.ErrnoException) => {
    if (epipeWatchers > 0) return;
    if (err.code === 'EPIPE') process.exit(EXIT_EPIPE);
    process.stderr.write(`rustasr: IO_ERROR: cannot write the output: ${err.message}\n`);
    process.exit(EXIT_FAILURE);
  });
}
