// The options of a model load, defined once: each option's check and default. Model.load validates through
// it (once per load: loadModel checks before a download and hands the checked options on), the APIs that load
// a model for one stream take theirs from any options object with pickLoadOptions, and docs/api.md lists them.
// Adding an option touches this table, the engine (ModelParams and the addon's loadModel) and the docs.
import { RustAsrError } from '../errors.js';

export type KernelName = 'auto' | 'avx512bf16' | 'avx512f' | 'avx2' | 'neon' | 'scalar';

/**
 * Compute device. 'auto' (the default): CUDA when a usable GPU and the CUDA plugin are found, else Metal
 * (macOS builds), else the CPU; a GPU that probes usable but fails to initialise falls back to the CPU with
 * a RUSTASR_DEVICE_FALLBACK warning. An explicitly named GPU that cannot be used rejects with
 * UNSUPPORTED_DEVICE. See docs/devices.md.
 */
export type Device = 'auto' | 'cpu' | 'cuda' | 'metal';

export const DEVICES: readonly Device[] = Object.freeze(['auto', 'cpu', 'cuda', 'metal']);
export const KERNELS: readonly KernelName[] = Object.freeze(['auto', 'avx512bf16', 'avx512f', 'avx2', 'neon', 'scalar']);
/** Largest `threads` (the engine's thread pool refuses more: a huge count would exhaust the OS's threads). */
export const MAX_THREADS = 4096;
/** Largest `deviceIndex`. */
export const MAX_DEVICE_INDEX = 255;

/**
 * Checks a device name and returns it ('auto' for undefined). Any name outside DEVICES throws
 * INVALID_ARGUMENT. Whether a named device is usable is decided by the native engine at load
 * (UNSUPPORTED_DEVICE, with the reason).
 */
export function checkDevice(device: unknown): Device {
  if (device === undefined) return 'auto';
  if (typeof device === 'string' && (DEVICES as readonly string[]).includes(device)) return device as Device;
  throw new RustAsrError('INVALID_ARGUMENT', `unknown device ${JSON.stringify(device)}; expected one of ${DEVICES.join(', ')}`);
}

/** What the engine's loadModel takes (src/native.ts), every value checked. */
export interface NativeLoadParams {
  device: Device;
  deviceIndex?: number;
  threads?: number;
  kernel?: string;
  quant?: 'bf16' | 'int8' | 'int4';
  precision?: 'f32' | 'bf16';
  cacheDir?: string | false;
  lowMemory?: boolean;
  largePages?: boolean;
}

type Check = (value: unknown, name: string) => unknown;

const intIn = (min: number, max: number): Check => (v, name) => {
  if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) {
    throw new RustAsrError('INVALID_OPTION', `${name} must be an integer in ${min} .. ${max}, got ${String(v)}`);
  }
  return v;
};
// A name the engine checks (a kernel this CPU has, a weight format it knows: INVALID_ARGUMENT / UNSUPPORTED_DEVICE).
const name: Check = (v, n) => {
  if (typeof v !== 'string' || v === '') throw new RustAsrError('INVALID_OPTION', `${n} must be a non-empty string, got ${String(v)}`);
  return v;
};
const oneOf = (values: readonly string[]): Check => (v, name) => {
  if (typeof v !== 'string' || !values.includes(v)) {
    throw new RustAsrError('INVALID_OPTION', `${name} must be one of ${values.map((x) => `'${x}'`).join(', ')}, got ${String(v)}`);
  }
  return v;
};
const bool: Check = (v, name) => {
  if (typeof v !== 'boolean') throw new RustAsrError('INVALID_OPTION', `${name} must be a boolean, got ${String(v)}`);
  return v;
};

/** The load options (LoadModelOptions in core/model.ts): name -> check. `device` is checked by checkDevice. */
export const LOAD_OPTIONS: Readonly<Record<Exclude<keyof NativeLoadParams, 'device'>, Check>> = Object.freeze({
  deviceIndex: intIn(0, MAX_DEVICE_INDEX),
  threads: intIn(0, MAX_THREADS),
  kernel: name,
  quant: oneOf(['bf16', 'int8', 'int4']),
  precision: oneOf(['f32', 'bf16']),
  cacheDir: (v: unknown, name: string) => {
    if (v !== false && (typeof v !== 'string' || v === '' || v.includes('\0'))) {
      throw new RustAsrError('INVALID_OPTION', `${name} must be a non-empty string or false, got ${String(v)}`);
    }
    return v;
  },
  lowMemory: bool,
  largePages: bool,
});

/** The names of the load options (what pickLoadOptions keeps). */
export type LoadKey = 'device' | 'signal' | keyof typeof LOAD_OPTIONS;
const LOAD_KEYS: readonly LoadKey[] = ['device', 'signal', ...(Object.keys(LOAD_OPTIONS) as (keyof typeof LOAD_OPTIONS)[])];

/** Validates the load options of `opts` (undefined ones are left out): the engine's parameters. */
export function checkLoadOptions(opts: Record<string, unknown>): NativeLoadParams {
  const out: NativeLoadParams = { device: checkDevice(opts['device']) };
  for (const [name, check] of Object.entries(LOAD_OPTIONS)) {
    const v = opts[name];
    if (v !== undefined) (out as unknown as Record<string, unknown>)[name] = check(v, name);
  }
  if (opts['signal'] !== undefined && !(opts['signal'] instanceof AbortSignal)) {
    throw new RustAsrError('INVALID_OPTION', 'signal must be an AbortSignal');
  }
  return out;
}

/** The load options of any options object (a transcriber's, a live stream's, a server's), nothing else. */
export function pickLoadOptions<T extends object>(opts: T): Pick<T, Extract<keyof T, LoadKey>> {
  const out: Record<string, unknown> = {};
  for (const k of LOAD_KEYS) {
    const v = (opts as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = v;
  }
  return out as Pick<T, Extract<keyof T, LoadKey>>;
}

/** Default of maxNewTokens (tokens generated per segment). */
export const DEFAULT_MAX_NEW_TOKENS = 512;

/** The one check of maxNewTokens (a positive integer); undefined stays undefined. */
export function checkMaxNewTokens(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || (v as number) < 1) {
    throw new RustAsrError('INVALID_OPTION', `maxNewTokens must be a positive integer, got ${String(v)}`);
  }
  return v as number;
}
