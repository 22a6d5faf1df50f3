// The decode stage: audio segments in, Token objects out, decoded on demand.
//
// TokenStream is the readable half shared by TokenDecoder (segments written to it) and the Transcriber
// (WAV bytes written to it, segmented internally). Decoding is pulled: `_read()` runs at most one native
// step (mel + encoder + prefill for a segment's first token), so a consumer that stops reading stops the
// decoder after `highWaterMark` tokens (plus the one in flight). An abort (the `signal` option, or
// destroying the stream) stops decoding between two steps and frees the native session.
import { Duplex, type DuplexOptions } from 'node:stream';

import { abortError } from '../core/abort.js';
import type { Model, Timings } from '../core/model.js';
import { checkMaxNewTokens } from '../core/options.js';
import { RustAsrError } from '../errors.js';
import { StreamingDetokenizer } from '../text/detokenizer.js';
import { normalizeLanguage } from '../text/prompt.js';
import type { AudioSegment } from './segment.js';

/** One generated token. */
export interface Token {
  /** The token id. */
  id: number;
  /**
   * The text this token adds, UTF-8 safe: '' while a multi-byte character is incomplete and while the
   * `language X<asr_text>` header is being parsed (the header itself never appears as text). The
   * concatenation of a segment's token texts is its raw transcript (untrimmed).
   */
  text: string;
  /** 0-based position among all tokens of the stream (continues across segments). */
  index: number;
  /** Index of the segment the token belongs to. */
  segment: number;
}

/** A decoded segment, reported by the 'segment' event once its last token has been produced. */
export interface SegmentResult {
  index: number;
  /** Start and end in the input, in seconds. */
  start: number;
  end: number;
  /** The segment's transcript, trimmed (the official output parsing). */
  text: string;
  /** Forced or detected language (undefined when the model reported none). */
  language: string | undefined;
  /** Generated ids, EOS excluded. */
  tokens: number[];
  timings: Timings;
  /**
   * With `timestamps: 'word'`: the segment's words with their times in the input (seconds), from the forced
   * aligner; [] for a segment without speech. Absent otherwise.
   */
  words?: { text: string; start: number; end: number }[];
}

/** Default number of tokens a token stream decodes ahead of its consumer. */
export const DEFAULT_TOKEN_HIGH_WATER_MARK = 8;

export interface TokenStreamOptions {
  /** A loaded Model, or a promise of one (the stream fails with the promise's error). */
  model: Model | Promise<Model>;
  /** Dispose the model when the stream closes (set when the stream loaded the model itself). */
  ownsModel?: boolean;
  /** Force the language (one of the model's support_languages, any case); '' or undefined: detect. */
  language?: string;
  /** System-prompt context (glossary, names). */
  context?: string;
  /** Most tokens generated per segment (default 512). */
  maxNewTokens?: number;
  /** Aborts decoding: the stream is destroyed with an error named 'AbortError', code 'ABORTED'. */
  signal?: AbortSignal;
  /** Tokens decoded ahead of the consumer (the readable highWaterMark; default 8). */
  highWaterMark?: number;
  /** Stop runaway repetition early (default true; see DecodeOptions.repetitionGuard). */
  repetitionGuard?: boolean;
}

/** Merges per-segment languages as the official pipeline does: consecutive duplicates dropped, ','-joined. */
export function mergeLanguages(langs: ReadonlyArray<string | undefined>): string | undefined {
  const out: string[] = [];
  for (const l of langs) {
    const v = (l ?? '').trim();
    if (v !== '' && v !== out[out.length - 1]) out.push(v);
  }
  return out.length ? out.join(',') : undefined;
}

function sumTimings(segs: readonly SegmentResult[]): Timings {
  const t: Timings = { melMs: 0, encoderMs: 0, prefillMs: 0, decodeMs: 0, totalMs: 0, audioSeconds: 0, rtf: 0 };
  for (const s of segs) {
    t.melMs += s.timings.melMs;
    t.encoderMs += s.timings.encoderMs;
    t.prefillMs += s.timings.prefillMs;
    t.decodeMs += s.timings.decodeMs;
    t.totalMs += s.timings.totalMs;
    t.audioSeconds += s.end - s.start;
  }
  t.rtf = t.audioSeconds > 0 ? t.totalMs / 1000 / t.audioSeconds : 0;
  return t;
}

/**
 * The readable token side of a decoding stream (abstract: subclasses say where segments come from).
 *
 * Events: 'language' (language: string, segment: number) when a segment's language is known (forced:
 * when it starts; detected: when its header is parsed); 'segment' (SegmentResult) when a segment is done.
 */
export abstract class TokenStream extends Duplex {
  /** Segments decoded so far. */
  readonly segments: SegmentResult[] = [];
  private readonly langs: (string | undefined)[] = [];
  private readonly opts: TokenStreamOptions;
  private readonly modelReady: Promise<Model>;
  private model: Model | undefined;
  private forcedLanguage: string | undefined;
  private maxNewTokens: number | undefined;
  private current: AsyncGenerator<Token, SegmentResult> | undefined;
  private currentAudio: AudioSegment | undefined;
  private pumping = false;
  private nextIndex = 0;
  private readonly internal = new AbortController();
  private readonly onAbort: () => void;

  protected constructor(opts: TokenStreamOptions, duplex: DuplexOptions) {
    const hwm = opts.highWaterMark ?? DEFAULT_TOKEN_HIGH_WATER_MARK;
    super({ ...duplex, readableObjectMode: true, readableHighWaterMark: hwm });
    this.opts = opts;
    this.onAbort = () => this.destroy(abortError(opts.signal?.reason));
    if (!Number.isInteger(hwm) || hwm < 0) {
      this.modelReady = Promise.reject(new RustAsrError('INVALID_OPTION', `highWaterMark must be a non-negative integer, got ${String(hwm)}`));
    } else {
      this.modelReady = Promise.resolve(opts.model).then((m) => this.prepare(m));
    }
    this.modelReady.catch((err: unknown) => this.fail(err));
    if (opts.signal) {
      if (opts.signal.aborted) queueMicrotask(this.onAbort);
      else opts.signal.addEventListener('abort', this.onAbort, { once: true });
    }
    this.once('close', () => {
      opts.signal?.removeEventListener('abort', this.onAbort);
      if (opts.ownsModel) void this.modelReady.then((m) => m.dispose(), () => {});
    });
  }

  /** The next segment to decode, or null at the end of the input. */
  protected abstract nextSegment(): Promise<AudioSegment | null>;

  /**
   * Runs after a segment's last token and before its 'segment' event (the Transcriber aligns words here and
   * adds them to `result`). The default does nothing.
   */
  protected async finishSegment(_result: SegmentResult, _audio: AudioSegment): Promise<void> {}

  /** The language(s) so far: forced, or detected per segment and merged ('Chinese,English'); undefined if none. */
  get language(): string | undefined {
    return mergeLanguages(this.langs);
  }

  /** Summed timings of the segments decoded so far. */
  get timings(): Timings {
    return sumTimings(this.segments);
  }

  /** The loaded model (undefined until it is ready). */
  get loadedModel(): Model | undefined {
    return this.model;
  }

  /** Validates the options against the model. */
  private prepare(model: Model): Model {
    if (this.destroyed) return model;
    const o = this.opts;
    if (model.disposed) throw new RustAsrError('INVALID_ARGUMENT', 'the model has been disposed');
    if (o.language !== undefined && o.language !== null && o.language !== '') {
      this.forcedLanguage = normalizeLanguage(o.language, model.info.supportLanguages);
    }
    checkMaxNewTokens(o.maxNewTokens);
    if (o.context !== undefined && typeof o.context !== 'string') throw new RustAsrError('INVALID_OPTION', 'context must be a string');
    this.maxNewTokens = o.maxNewTokens;
    this.model = model;
    return model;
  }

  private fail(err: unknown): void {
    if (!this.destroyed) this.destroy(err instanceof Error ? err : new RustAsrError('INTERNAL', String(err)));
  }

  override _read(): void {
    if (this.pumping) return;
    this.pumping = true;
    this.produce().then(
      (tok) => {
        this.pumping = false;
        if (this.destroyed) return;
        this.push(tok);
      },
      (err: unknown) => {
        this.pumping = false;
        this.fail(err);
      },
    );
  }

  /** The next token, or null at the end. */
  private async produce(): Promise<Token | null> {
    const model = await this.modelReady;
    for (;;) {
      if (this.destroyed) return null;
      if (!this.current) {
        const seg = await this.nextSegment();
        if (seg === null) {
          if (this.segments.length === 0) throw new RustAsrError('EMPTY_AUDIO', 'no audio samples');
          return null;
        }
        if (this.destroyed) return null;
        this.currentAudio = seg;
        this.current = this.decodeSegment(model, seg);
      }
      const r = await this.current.next();
      if (!r.done) return r.value;
      this.current = undefined;
      await this.finishSegment(r.value, this.currentAudio!);
      if (this.destroyed) return null;
      this.segments.push(r.value);
      this.emit('segment', r.value);
    }
  }

  private setLanguage(segment: number, lang: string | undefined): void {
    if (lang === undefined) return;
    this.langs[segment] = lang;
    this.emit('language', lang, segment);
  }

  /** Decodes one segment: a token per native step; a token whose text is still pending is held back one step. */
  private async *decodeSegment(model: Model, seg: AudioSegment): AsyncGenerator<Token, SegmentResult> {
    const forced = this.forcedLanguage;
    // Created at the first result: decode() has awaited the tokenizer (which loads in the background) by then.
    let detok: StreamingDetokenizer | undefined;
    const supported = model.info.supportLanguages;
    const gen = model.decode(seg.samples, {
      language: forced,
      context: this.opts.context,
      maxNewTokens: this.maxNewTokens,
      signal: this.internal.signal,
      repetitionGuard: this.opts.repetitionGuard,
    });
    if (forced !== undefined) this.setLanguage(seg.index, forced);
    let held: Token | undefined;
    try {
      for (;;) {
        const r = await gen.next();
        detok ??= new StreamingDetokenizer(model.tokenizer, { expectHeader: forced === undefined });
        if (r.done) {
          const rest = detok.end();
          if (held) {
            held.text += rest;
            const h = held;
            held = undefined;
            yield h;
          }
          const res = r.value;
          const language = forced ?? res.language;
          if (forced === undefined && this.langs[seg.index] === undefined) this.setLanguage(seg.index, language);
          return { index: seg.index, start: seg.start, end: seg.end, text: res.text, language, tokens: res.tokens, timings: res.timings };
        }
        const wasParsed = detok.headerParsed;
        const text = detok.push(r.value);
        if (!wasParsed && detok.headerParsed && detok.language !== undefined) {
          let lang = detok.language;
          try {
            lang = normalizeLanguage(lang, supported);
          } catch {
            // not a supported name: keep it as written
          }
          this.setLanguage(seg.index, lang);
        }
        const tok: Token = { id: r.value, text, index: this.nextIndex++, segment: seg.index };
        if (held) {
          const h = held;
          held = undefined;
          yield h;
        }
        if (detok.pending) held = tok;
        else yield tok;
      }
    } finally {
      await gen.return(undefined as never);
    }
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.internal.abort();
    const cur = this.current;
    this.current = undefined;
    // Queued behind a step in flight, if any; runs the generators' finally blocks (session disposal).
    if (cur) cur.return(undefined as never).catch(() => {});
    callback(err);
  }
}

export type TokenDecoderOptions = TokenStreamOptions;

/**
 * A Duplex from AudioSegments (objectMode, as the Segmenter emits them) to Tokens (objectMode). A written
 * segment is acknowledged when its decoding starts, so one segment waits while another decodes.
 */
export class TokenDecoder extends TokenStream {
  private readonly queue: { seg: AudioSegment; cb: (error?: Error | null) => void }[] = [];
  private ended = false;
  private wake: (() => void) | undefined;

  constructor(opts: TokenDecoderOptions) {
    super(opts, { writableObjectMode: true, writableHighWaterMark: 1 });
  }

  override _write(seg: AudioSegment, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (!seg || !(seg.samples instanceof Float32Array) || typeof seg.index !== 'number') {
      callback(new RustAsrError('INVALID_ARGUMENT', 'TokenDecoder expects AudioSegment objects'));
      return;
    }
    this.queue.push({ seg, cb: callback });
    this.wake?.();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.ended = true;
    this.wake?.();
    callback();
  }

  protected async nextSegment(): Promise<AudioSegment | null> {
    for (;;) {
      const item = this.queue.shift();
      if (item) {
        item.cb();
        return item.seg;
      }
      if (this.ended || this.destroyed) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.wake?.();
    super._destroy(err, callback);
  }
}
