// Shared pieces of the CLI commands: exit codes, the usage error (exit code 2), option value checks.
import { RustAsrError } from '../errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** The model `infer`, `listen` and `serve` use when --model is not given (downloaded into the cache on first use). */
export const DEFAULT_MODEL = 'Qwen/Qwen3-ASR-0.6B';

/** A bad command line: exit code 2. */
export class UsageError extends RustAsrError {
  constructor(message: string) {
    super('INVALID_OPTION', message);
  }
}

export function stringOpt(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'number') return String(v); // mri turns numeric-looking values into numbers
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} needs a value`);
  return v;
}

export function enumOpt<T extends string>(name: string, v: unknown, allowed: readonly T[]): T | undefined {
  const s = stringOpt(name, v);
  if (s === undefined) return undefined;
  if (!allowed.includes(s as T)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got ${s}`);
  return s as T;
}

export function intOpt(name: string, v: unknown, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${String(v)}`);
  return n;
}

export function numberOpt(name: string, v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!(Number.isFinite(n) && n > 0)) throw new UsageError(`--${name} must be a positive number, got ${String(v)}`);
  return n;
}

/** Reports a command's failure on stderr and sets the exit code (2 for usage errors, 1 otherwise). */
export function reportFailure(err: unknown): void {
  const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
  process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
  process.exitCode = e.code === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_FAILURE;
}
