// Errors as the OpenAI API reports them: an HTTP status and `{ error: { message, type, param, code } }`.
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

import { RustAsrError, type RustAsrErrorCode } from '../errors.js';

/** OpenAI's error types: 'invalid_request_error' (4xx the client can fix), 'server_error', ... */
export type OpenAiErrorType = 'invalid_request_error' | 'authentication_error' | 'rate_limit_error' | 'server_error';

/** The body of every error response. */
export interface OpenAiErrorBody {
  error: { message: string; type: OpenAiErrorType; param: string | null; code: string };
}

/** An error with its HTTP status, thrown by route handlers and turned into an OpenAI error response. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    /** Stable snake_case code (the `code` field of the body). */
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    /** Extra response headers (Retry-After, WWW-Authenticate, Connection). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  get type(): OpenAiErrorType {
    if (this.status === 401) return 'authentication_error';
    if (this.status === 429) return 'rate_limit_error';
    if (this.status >= 500) return 'server_error';
    return 'invalid_request_error';
  }

  body(): OpenAiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** HTTP status for each SDK error code a transcription can fail with. */
const STATUS: Partial<Record<RustAsrErrorCode, number>> = {
  INVALID_WAV: 415,
  UNSUPPORTED_WAV_FORMAT: 415,
  UNSUPPORTED_AUDIO_FORMAT: 415,
  INVALID_AUDIO: 415,
  TRUNCATED_WAV: 400,
  EMPTY_AUDIO: 400,
  AUDIO_TOO_SHORT: 400,
  UNSUPPORTED_LANGUAGE: 400,
  INVALID_OPTION: 400,
  INVALID_ARGUMENT: 400,
  IO_ERROR: 500,
  INTERNAL: 500,
};

/** Maps any error to an HttpError: a RustAsrError keeps its code (lower-cased), anything else is a 500. */
export function toHttpError(err: unknown, param: string | null = null): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof RustAsrError) {
    const status = STATUS[err.code] ?? 500;
    const p = err.code === 'UNSUPPORTED_LANGUAGE' ? 'language' : status === 415 || err.code === 'TRUNCATED_WAV' ? 'file' : param;
    return new HttpError(status, err.code.toLowerCase(), err.message, p);
  }
  return new HttpError(500, 'internal', err instanceof Error ? err.message : String(err));
}

/** Sends `err` as an OpenAI error response (if the response has not started). */
export function sendError(res: ServerResponse, err: HttpError): void {
  if (res.headersSent || res.destroyed) return;
  const body = JSON.stringify(err.body());
  res.writeHead(err.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...err.headers,
  });
  res.end(body);
}

/** Answers an HTTP Upgrade request with `err` on the raw socket, and closes it (no WebSocket handshake). */
export function refuseUpgrade(socket: Duplex, err: HttpError): void {
  const body = JSON.stringify(err.body());
  const reason = { 400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' }[err.status] ?? 'Error';
  const headers = Object.entries({ 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), connection: 'close', ...err.headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(`HTTP/1.1 ${err.status} ${reason}\r\n${headers}\r\n${body}`);
}
