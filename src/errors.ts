// Error type shared by the whole SDK: every failure surfaces as a RustAsrError with a stable `code`.

/** Codes raised by the native engine (the addon sets `err.code` to one of these). */
export type NativeErrorCode =
  | 'INVALID_ARGUMENT'
  | 'MODEL_NOT_FOUND'
  | 'INVALID_CONFIG'
  | 'MISSING_TENSOR'
  | 'TENSOR_SHAPE'
  | 'UNSUPPORTED_DTYPE'
  | 'CORRUPT_WEIGHTS'
  | 'IO_ERROR'
  | 'ABORTED'
  | 'UNSUPPORTED_DEVICE'
  | 'INTERNAL';

/** Codes raised by the TypeScript layer. */
export type SdkErrorCode =
  | 'INVALID_WAV'
  | 'UNSUPPORTED_WAV_FORMAT'
  | 'TRUNCATED_WAV'
  | 'UNSUPPORTED_AUDIO_FORMAT'
  | 'INVALID_AUDIO'
  | 'EMPTY_AUDIO'
  | 'AUDIO_TOO_SHORT'
  | 'INVALID_TOKENIZER'
  | 'UNSUPPORTED_LANGUAGE'
  | 'INVALID_OPTION'
  | 'DOWNLOAD_FAILED'
  | 'CHECKSUM_MISMATCH'
  | 'WRONG_MODEL_KIND'
  | 'NO_ALIGNABLE_TEXT'
  | 'AUDIO_TOO_LONG';

/** Every stable error code. New codes may be added in minor versions; existing ones never change meaning. */
export type RustAsrErrorCode = NativeErrorCode | SdkErrorCode;

const NATIVE_CODES: ReadonlySet<string> = new Set<NativeErrorCode>([
  'INVALID_ARGUMENT',
  'MODEL_NOT_FOUND',
  'INVALID_CONFIG',
  'MISSING_TENSOR',
  'TENSOR_SHAPE',
  'UNSUPPORTED_DTYPE',
  'CORRUPT_WEIGHTS',
  'IO_ERROR',
  'ABORTED',
  'UNSUPPORTED_DEVICE',
  'INTERNAL',
]);

const ALL_CODES: ReadonlySet<string> = new Set<RustAsrErrorCode>([
  ...(NATIVE_CODES as ReadonlySet<NativeErrorCode>),
  'INVALID_WAV',
  'UNSUPPORTED_WAV_FORMAT',
  'TRUNCATED_WAV',
  'UNSUPPORTED_AUDIO_FORMAT',
  'INVALID_AUDIO',
  'EMPTY_AUDIO',
  'AUDIO_TOO_SHORT',
  'INVALID_TOKENIZER',
  'UNSUPPORTED_LANGUAGE',
  'INVALID_OPTION',
  'DOWNLOAD_FAILED',
  'CHECKSUM_MISMATCH',
  'WRONG_MODEL_KIND',
  'NO_ALIGNABLE_TEXT',
  'AUDIO_TOO_LONG',
]);

/** True when `code` is one of the stable RustAsrErrorCode values. */
export function isRustAsrErrorCode(code: unknown): code is RustAsrErrorCode {
  return typeof code === 'string' && ALL_CODES.has(code);
}

export class RustAsrError extends Error {
  override readonly name = 'RustAsrError';
  readonly code: RustAsrErrorCode;

  constructor(code: RustAsrErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.code = code;
  }
}

/** True for RustAsrError instances (optionally with a given code). */
export function isRustAsrError(err: unknown, code?: RustAsrErrorCode): err is RustAsrError {
  return err instanceof RustAsrError && (code === undefined || err.code === code);
}

/**
 * Converts whatever the native addon threw (an Error whose string `code` property names a native
 * code) into a RustAsrError. Unknown or missing codes map to 'INTERNAL'; the message is kept and
 * the original value is attached as `cause`. A RustAsrError is returned unchanged.
 */
export function fromNative(err: unknown): RustAsrError {
  if (err instanceof RustAsrError) return err;
  let message: string;
  let rawCode: unknown;
  if (err instanceof Error) {
    message = err.message;
    rawCode = (err as Error & { code?: unknown }).code;
  } else if (typeof err === 'object' && err !== null) {
    const o = err as { message?: unknown; code?: unknown };
    message = typeof o.message === 'string' ? o.message : String(err);
    rawCode = o.code;
  } else {
    message = String(err);
  }
  const code: RustAsrErrorCode = isRustAsrErrorCode(rawCode) ? rawCode : 'INTERNAL';
  return new RustAsrError(code, message, { cause: err });
}
