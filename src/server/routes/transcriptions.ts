// POST /v1/audio/transcriptions: the OpenAI audio transcription API over recognize() / transcribe().
//
//   multipart fields: file, model, language (ISO code or name), prompt (-> context), response_format
//   (json | text | srt | vtt | verbose_json), timestamp_granularities[] (segment | word), stream, temperature
//
// Order of work: admission (429 when --max-concurrent + --max-queue requests are in), the upload (413 at the
// first byte past --max-upload-mb), the fields (400), a run slot, then decoding. A client that goes away
// aborts whichever step it is in; the temp file, the queue place and the native session are freed.
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';

import { isAbortError } from '../../core/abort.js';
import { alignerLanguage } from '../../api/align.js';
import type { Model } from '../../api/model.js';
import { recognize } from '../../api/recognize.js';
import { transcribe, type TranscribeResult } from '../../api/transcribe.js';
import type { RecognizeOptions } from '../../api/transcriber.js';
import { isRustAsrError } from '../../errors.js';
import type { HttpRoute, ServerContext } from '../context.js';
import { HttpError, toHttpError } from '../errors.js';
import { RESPONSE_FORMATS, formatResult, type ResponseFormat } from '../formats.js';
import { languageName } from '../languages.js';
import { readForm, type Form, type UploadedFile } from '../upload.js';
import { isServedModel, modelNotFound } from './models.js';

/** The validated request. */
export interface TranscriptionRequest {
  file: UploadedFile;
  language: string | undefined;
  context: string | undefined;
  format: ResponseFormat;
  stream: boolean;
  granularities: ('segment' | 'word')[];
  /**
   * Run the forced aligner (ctx.aligner): for `timestamp_granularities[]=word`, and for srt/vtt when the
   * server has an aligner that takes the forced language (the cues then follow word times).
   */
  align: boolean;
}

const GRANULARITIES = ['segment', 'word'] as const;

function one(form: Form, name: string): string | undefined {
  const v = form.fields.get(name);
  if (v === undefined) return undefined;
  if (v.length > 1) throw new HttpError(400, 'invalid_request', `the field ${JSON.stringify(name)} was given more than once`, name);
  return v[0];
}

function bool(name: string, v: string | undefined): boolean {
  if (v === undefined || v === '') return false;
  const s = v.trim().toLowerCase();
  if (s === 'true' || s === '1') return true;
  if (s === 'false' || s === '0') return false;
  throw new HttpError(400, 'invalid_value', `${name} must be true or false, got ${JSON.stringify(v)}`, name);
}

/** Checks the form's fields (400 for anything out of range, 404 for another model). */
export function parseTranscriptionForm(form: Form, ctx: ServerContext): TranscriptionRequest {
  const model = one(form, 'model');
  if (model !== undefined && model !== '' && !isServedModel(ctx, model)) throw modelNotFound(ctx, model);
  const fmt = one(form, 'response_format') ?? 'json';
  if (!(RESPONSE_FORMATS as readonly string[]).includes(fmt)) {
    throw new HttpError(400, 'invalid_value', `response_format must be one of ${RESPONSE_FORMATS.join(', ')}, got ${JSON.stringify(fmt)}`, 'response_format');
  }
  const format = fmt as ResponseFormat;
  const stream = bool('stream', one(form, 'stream'));
  if (stream && format !== 'json' && format !== 'text') {
    throw new HttpError(400, 'invalid_value', `stream=true needs response_format json or text, got ${format}`, 'stream');
  }
  const granularities: ('segment' | 'word')[] = [];
  for (const g of [...(form.fields.get('timestamp_granularities[]') ?? []), ...(form.fields.get('timestamp_granularities') ?? [])]) {
    if (!(GRANULARITIES as readonly string[]).includes(g)) {
      throw new HttpError(400, 'invalid_value', `timestamp_granularities[] must be segment or word, got ${JSON.stringify(g)}`, 'timestamp_granularities');
    }
    granularities.push(g as 'segment' | 'word');
  }
  if (granularities.length > 0 && format !== 'verbose_json') {
    throw new HttpError(400, 'invalid_value', 'timestamp_granularities[] needs response_format verbose_json', 'timestamp_granularities');
  }
  const temperature = one(form, 'temperature');
  if (temperature !== undefined && temperature !== '') {
    const t = Number(temperature);
    if (!Number.isFinite(t) || t < 0 || t > 1) {
      throw new HttpError(400, 'invalid_value', `temperature must be a number from 0 to 1, got ${JSON.stringify(temperature)}`, 'temperature');
    }
  }
  const lang = one(form, 'language');
  const language = lang === undefined || lang.trim() === '' ? undefined : languageName(lang);
  let align = false;
  if (granularities.includes('word')) {
    if (ctx.aligner === undefined) {
      throw new HttpError(
        400,
        'word_timestamps_unavailable',
        'word timestamps need a forced aligner and this server has none: start it with --aligner DIR|ID (e.g. Qwen/Qwen3-ForcedAligner-0.6B; `rustasr pull` caches it)',
        'timestamp_granularities',
      );
    }
    alignerLanguage(ctx.aligner, language); // UNSUPPORTED_LANGUAGE (400, param language) before the upload is decoded
    align = true;
  } else if ((format === 'srt' || format === 'vtt') && ctx.aligner !== undefined) {
    align = alignerTakes(ctx.aligner, language);
  }
  const prompt = one(form, 'prompt');
  if (form.file === undefined) throw new HttpError(400, 'missing_file', 'the multipart field "file" (the audio) is required', 'file');
  return {
    file: form.file,
    language,
    context: prompt === undefined || prompt === '' ? undefined : prompt,
    format,
    stream,
    granularities,
    align,
  };
}

/** Whether the aligner takes a forced language (any detected one is split generically); else srt/vtt fall back. */
function alignerTakes(aligner: Model, language: string | undefined): boolean {
  try {
    alignerLanguage(aligner, language);
    return true;
  } catch (err) {
    if (isRustAsrError(err, 'UNSUPPORTED_LANGUAGE')) return false;
    throw err;
  }
}

function observe(ctx: ServerContext, r: Pick<TranscribeResult, 'timings' | 'tokens'>): void {
  const t = r.timings;
  ctx.metrics.audioSeconds.inc(t.audioSeconds);
  ctx.metrics.tokens.inc(r.tokens.length);
  if (t.audioSeconds > 0) ctx.metrics.rtf.observe(t.rtf);
  if (t.decodeMs > 0 && r.tokens.length > 0) ctx.metrics.tokensPerSecond.observe(r.tokens.length / (t.decodeMs / 1000));
}

function recognizeOptions(model: Model, r: TranscriptionRequest, ctx: ServerContext, signal: AbortSignal): RecognizeOptions {
  const o: RecognizeOptions = { model, language: r.language, context: r.context, maxNewTokens: ctx.maxNewTokens, repetitionGuard: ctx.repetitionGuard, signal };
  if (r.align && ctx.aligner !== undefined) {
    // The server's one loaded aligner, shared by every request (never loaded per request).
    o.timestamps = 'word';
    o.aligner = ctx.aligner;
  }
  return o;
}

/**
 * A signal that fires with the first of `a` and `b` (AbortSignal.any needs Node 20.3), and a function that
 * drops its listeners (`b` is the server-wide shutdown signal: it must not collect one per request).
 */
function anySignal(a: AbortSignal, b: AbortSignal): { signal: AbortSignal; dispose: () => void } {
  const c = new AbortController();
  const onA = () => c.abort(a.reason);
  const onB = () => c.abort(b.reason);
  const dispose = () => {
    a.removeEventListener('abort', onA);
    b.removeEventListener('abort', onB);
  };
  if (a.aborted) onA();
  else if (b.aborted) onB();
  else {
    a.addEventListener('abort', onA, { once: true });
    b.addEventListener('abort', onB, { once: true });
  }
  return { signal: c.signal, dispose };
}

const inputOf = (f: UploadedFile): string | Buffer => f.path ?? f.data ?? Buffer.alloc(0);

/** The whole result in the asked format. */
async function respondWhole(res: ServerResponse, model: Model, r: TranscriptionRequest, ctx: ServerContext, signal: AbortSignal): Promise<void> {
  const result = await transcribe(inputOf(r.file), recognizeOptions(model, r, ctx, signal));
  observe(ctx, result);
  const { contentType, body } = formatResult(r.format, result, { words: r.granularities.includes('word') });
  res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * stream=true: server-sent events, a `transcript.text.delta` per decoded token with text, then
 * `transcript.text.done` with the whole text. The status line waits for the first token, so bad audio or
 * options still get their JSON error and status; a failure after that is an `error` event.
 */
async function respondStream(res: ServerResponse, model: Model, r: TranscriptionRequest, ctx: ServerContext, signal: AbortSignal): Promise<void> {
  const stream = recognize(inputOf(r.file), recognizeOptions(model, r, ctx, signal));
  const it = stream[Symbol.asyncIterator]();
  const tokens: number[] = [];
  try {
    let next = await it.next();
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    const send = async (event: unknown) => {
      if (!res.write(`data: ${JSON.stringify(event)}\n\n`)) await once(res, 'drain', { signal });
    };
    for (; !next.done; next = await it.next()) {
      tokens.push(next.value.id);
      if (next.value.text !== '') await send({ type: 'transcript.text.delta', delta: next.value.text });
    }
    const text = stream.segments.map((s) => s.text).join('');
    observe(ctx, { timings: stream.timings, tokens });
    await send({ type: 'transcript.text.done', text });
    res.end();
  } catch (err) {
    if (!res.headersSent || isAbortError(err) || res.destroyed) throw err;
    const e = toHttpError(err);
    ctx.metrics.errors.inc({ code: e.code });
    res.end(`data: ${JSON.stringify({ type: 'error', ...e.body() })}\n\n`);
  } finally {
    stream.destroy();
  }
}

export const transcriptionsRoute: HttpRoute = {
  name: 'transcriptions',
  methods: ['POST'],
  path: '/v1/audio/transcriptions',
  auth: true,
  async handle(req: IncomingMessage, res: ServerResponse, ctx: ServerContext): Promise<void> {
    const model = ctx.model;
    if (model === undefined) {
      const why = ctx.modelError === undefined ? 'the model is not loaded yet; retry when /readyz answers 200' : `the model failed to load: ${ctx.modelError.message}`;
      throw new HttpError(503, 'model_not_loaded', why, null, { 'retry-after': '5' });
    }
    const ticket = ctx.gate.enter();
    if (ticket === undefined) {
      throw new HttpError(
        429,
        'queue_full',
        `the server is busy: ${ctx.gate.maxConcurrent} transcriptions running and ${ctx.gate.maxQueue} queued; retry later`,
        null,
        { 'retry-after': '1' },
      );
    }
    const client = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) client.abort(new Error('the client closed the connection'));
    };
    res.once('close', onClose);
    const { signal, dispose } = anySignal(client.signal, ctx.shutdownSignal);
    let form: Form | undefined;
    try {
      form = await readForm(req, ctx.upload, signal);
      const request = parseTranscriptionForm(form, ctx);
      await ticket.start(signal);
      if (request.stream) await respondStream(res, model, request, ctx, signal);
      else await respondWhole(res, model, request, ctx, signal);
    } catch (err) {
      // Cut short by the drain deadline while the client still waits: tell it so.
      if (isAbortError(err) && !client.signal.aborted && ctx.shutdownSignal.aborted) {
        throw new HttpError(503, 'shutting_down', 'the server is shutting down; the transcription was stopped', null, { connection: 'close' });
      }
      throw err;
    } finally {
      dispose();
      await form?.cleanup();
      ticket.release();
    }
  },
};
