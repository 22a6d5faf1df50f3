// Flag value checks shared by the CLI commands: a bad value is a UsageError (exit code 2).
import { RustAsrError } from '../errors.js';

/** The model `infer` and `serve` use when --model is not given (downloaded into the cache on first use). */
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
