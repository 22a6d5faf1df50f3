// Live recognition: partial and final results while audio is still arriving.
//
//   16 kHz audio -> Endpointer (segments: pause / longest segment) -> per segment, every chunkSeconds of audio,
//   one engine step on the stream's native session -> partial events; at the segment's end, one last step ->
//   a final event; the segment's audio, encoder cache and KV are dropped and the next segment starts afresh.
//
// Two modes, one native call (Session::start with the session's state kept between steps):
//  - exact: the official streaming loop (core/official-streaming.ts): every step runs the model on all audio
//    of the segment and re-encodes the rolled-back text (the golden reference; cost grows with the square of
//    the segment's length).
//  - fast (default): incremental. Finished encoder windows are cached, the KV cache is kept up to the first
//    audio token that changed, and the prefix follows the official rollback but never gets shorter than the
//    prefix already fed (so `stable` text is final) and is capped at maxPrefixTokens.
import { performance } from 'node:perf_hooks';

import { RustAsrError } from '../errors.js';
import type { NativeSession, NativeStartResult } from '../native.js';
import { parseAsrOutputOfficial } from '../text/asr-output.js';
import { checkContext, normalizeLanguage, promptPieces, type PromptPieces } from '../text/prompt.js';
import type { AsrTokenizer } from '../text/tokenizer.js';
import { Endpointer, type EndpointEvent, type EndpointOptions } from '../audio/endpoint.js';
import { abortError } from './abort.js';
import type { Model } from './model.js';
import { OfficialStreaming, type GenerateFn } from './official-streaming.js';

/** What a step of a live segment looked like (for a per-step token budget). */
export interface LiveStepInfo {
  /** 0-based step of the segment. */
  step: number;
  /** Seconds of audio new to this step. */
  newSeconds: number;
  /** Seconds of the segment so far. */
  segmentSeconds: number;
  /** Tokens of the previous answer that this step rolls back (0 while the prefix is empty). */
  rolledBack: number;
}

export interface LiveOptions {
  /** Force the language (one of the model's support_languages, any case); omit to detect it. */
  language?: string;
  /** System-prompt context (glossary, names). */
  context?: string;
  /** The official streaming algorithm, step for step (default false: the incremental fast mode). */
  exact?: boolean;
  /**
   * Segment the stream at pauses and at maxSegmentSeconds (default true). false: the whole stream is one
   * segment (the official loop's behaviour; fast mode still ends a segment at maxPrefixTokens).
   */
  endpoint?: boolean;
  /** Seconds of audio per step (default 2.0, the official chunk_size_sec). */
  chunkSeconds?: number;
  /** Steps decoded with an empty prefix at the start of a segment (default 2). */
  unfixedChunks?: number;
  /** Tokens of the previous answer rolled back and decoded again at each step (default 5). */
  unfixedTokens?: number;
  /**
   * Most tokens generated per step (default 32, the official example's). A function gets each step's facts
   * (benchmarks use it to emulate speech on random weights).
   */
  maxNewTokens?: number | ((step: LiveStepInfo) => number);
  /** Fast mode: longest text prefix fed back, in tokens (default 256); a segment reaching it ends there. */
  maxPrefixTokens?: number;
  /** Longest segment in seconds (default 30). */
  maxSegmentSeconds?: number;
  /** Endpointing: the pause that ends a segment in ms (default 600), and the other detector settings. */
  minSilenceMs?: number;
  thresholdDb?: number;
  relativeDb?: number;
  /** Put the previous segment's final text in the system prompt of the next (default false). */
  pastText?: boolean;
  /** Aborts: the step in flight stops at its next check and the stream fails with code ABORTED. */
  signal?: AbortSignal;
}

/** What one step cost. */
export interface LiveStepStats {
  /** Wall time of the step (start + decode), in ms. */
  ms: number;
  melMs: number;
  encoderMs: number;
  prefillMs: number;
  decodeMs: number;
  /** Prompt positions prefilled again / kept in the KV cache. */
  promptTokens: number;
  reusedTokens: number;
  /** Audio tokens encoded by this step, and cached for later ones. */
  encodedTokens: number;
  cachedTokens: number;
  /** Tokens generated (EOS excluded). */
  generated: number;
}

/** The current hypothesis of a segment. */
export interface PartialEvent {
  type: 'partial';
  segment: number;
  /** The segment's whole current text. */
  text: string;
  /** The part of `text` that will not change any more (fast mode; '' in exact mode, which gives no such promise). */
  stable: string;
  /** The rest of `text`. */
  unstable: string;
  /** Stream time the hypothesis covers, in seconds (the end of the audio it was computed on). */
  audioSeconds: number;
  /** Segment start, in seconds of stream time. */
  start: number;
  /** Forced or detected language, when known. */
  language: string | undefined;
  step: LiveStepStats;
}

/** A segment's result. */
export interface FinalEvent {
  type: 'final';
  segment: number;
  text: string;
  /** Start and end in seconds of stream time. */
  start: number;
  end: number;
  language: string | undefined;
  /** Why the segment ended: a pause, its maximum length (or the prefix cap), or the end of the input. */
  reason: 'pause' | 'length' | 'input';
  step?: LiveStepStats;
}

export type LiveEvent = PartialEvent | FinalEvent;

export const LIVE_DEFAULTS = Object.freeze({
  chunkSeconds: 2.0,
  unfixedChunks: 2,
  unfixedTokens: 5,
  maxNewTokens: 32,
  maxPrefixTokens: 256,
  maxSegmentSeconds: 30,
});

interface StepResult {
  ids: number[];
  /** ids without the EOS and without special tokens (what the text is made of). */
  textIds: number[];
  text: string;
  start: NativeStartResult;
  stats: LiveStepStats;
}

/**
 * One engine step: the new audio and the prompt go to the session in one start() call, then greedy steps until
 * an EOS or `maxNewTokens`.
 */
export async function engineStep(
  model: Model,
  session: NativeSession,
  newAudio: Float32Array | null,
  prompt: { head: Int32Array; tail: Int32Array },
  opts: { reset: boolean; incremental: boolean; maxNewTokens: number; checkAbort: () => void },
): Promise<StepResult> {
  const tokenizer = model.tokenizer;
  const t0 = performance.now();
  const start = await session.start(newAudio, prompt.head, prompt.tail, { reset: opts.reset, incremental: opts.incremental, keepAudio: true });
  const t1 = performance.now();
  const ids: number[] = [];
  let next = start.id;
  for (;;) {
    ids.push(next);
    if (model.eosIds.has(next) || ids.length >= opts.maxNewTokens) break;
    opts.checkAbort();
    next = (await session.step(next)).id;
  }
  const t2 = performance.now();
  const textIds = ids.filter((id) => !model.eosIds.has(id) && !tokenizer.isSpecial(id));
  return {
    ids,
    textIds,
    text: tokenizer.decode(textIds, { skipSpecial: true }),
    start,
    stats: {
      ms: t2 - t0,
      melMs: start.melMs,
      encoderMs: start.encoderMs,
      prefillMs: Math.max(0, t1 - t0 - start.melMs - start.encoderMs),
      decodeMs: t2 - t1,
      promptTokens: start.promptTokens,
      reusedTokens: start.reusedTokens,
      encodedTokens: start.encodedTokens,
      cachedTokens: start.cachedTokens,
      generated: ids.filter((id) => !model.eosIds.has(id)).length,
    },
  };
}

/** The longest common prefix of two strings, not splitting a surrogate pair. */
function commonPrefix(a: string, b: string): string {
  let i = 0;
  const n = Math.min(a.length, b.length);
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  if (i > 0 && i < a.length && a.charCodeAt(i - 1) >= 0xd800 && a.charCodeAt(i - 1) <= 0xdbff) i--;
  return a.slice(0, i);
}

/** The outcome of a segment step, for the events. */
interface SegmentStep {
  text: string;
  stable: string;
  language: string;
  /** Segment samples the step covered. */
  covered: number;
  stats: LiveStepStats;
  /** Fast mode: the prefix reached maxPrefixTokens (the segment should end). */
  capped: boolean;
}

interface SegmentDecoder {
  /** Audio of the segment, with the number of voiced frames in it; returns the steps that ran. */
  push(samples: Float32Array, voiced: number): Promise<SegmentStep[]>;
  /** Cuts the segment back to its first n samples. */
  truncate(n: number): void;
  /** The last step (on the audio not stepped yet); null when nothing is left to run. */
  finish(): Promise<SegmentStep | null>;
  /** The segment's current text and language (the last step's). */
  readonly text: string;
  readonly language: string;
}

interface SegmentContext {
  model: Model;
  session: NativeSession;
  tokenizer: AsrTokenizer;
  context: string;
  language: string | undefined;
  chunkSamples: number;
  unfixedChunks: number;
  unfixedTokens: number;
  budget: (info: LiveStepInfo) => number;
  maxPrefixTokens: number;
  skipSilence: boolean;
  checkAbort: () => void;
  sampleRate: number;
}

/** Audio held by a segment decoder: samples in order, with whether any voiced frame is among them. */
class Held {
  private parts: Float32Array[] = [];
  length = 0;
  voiced = false;
  push(x: Float32Array, voiced: boolean): void {
    if (x.length === 0) return;
    this.parts.push(x);
    this.length += x.length;
    this.voiced ||= voiced;
  }
  /** Removes and returns the first n samples. */
  take(n: number): Float32Array {
    const out = new Float32Array(n);
    let o = 0;
    while (o < n) {
      const p = this.parts[0]!;
      const k = Math.min(p.length, n - o);
      out.set(p.subarray(0, k), o);
      o += k;
      if (k === p.length) this.parts.shift();
      else this.parts[0] = p.subarray(k);
    }
    this.length -= n;
    return out;
  }
  /** Keeps the first n samples. */
  keep(n: number): void {
    if (n >= this.length) return;
    const kept = this.take(n);
    this.parts = kept.length > 0 ? [kept] : [];
    this.length = kept.length;
  }
  clear(): void {
    this.parts = [];
    this.length = 0;
    this.voiced = false;
  }
}

/** Fast mode: incremental steps on one segment. */
class FastSegment implements SegmentDecoder {
  text = '';
  language = '';
  private readonly pieces: PromptPieces;
  /** Audio of the chunk being filled, and whole chunks not stepped yet (silent ones are not stepped alone). */
  private readonly filling = new Held();
  private readonly unstepped = new Held();
  /** Segment samples given to the session. */
  private fed = 0;
  private steps = 0;
  /** The prefix text fed last (it never gets shorter), and the raw answer of the last step (prefix + new text). */
  private committed = '';
  private rawText = '';
  private stepped = false;

  constructor(private readonly c: SegmentContext) {
    this.pieces = this.promptWith('');
  }

  private promptWith(prefixText: string): PromptPieces {
    const c = this.c;
    return promptPieces(c.tokenizer, { context: c.context, language: c.language, supportedLanguages: c.model.info.supportLanguages, prefixText });
  }

  async push(samples: Float32Array, voiced: number): Promise<SegmentStep[]> {
    const out: SegmentStep[] = [];
    let x = samples;
    while (x.length > 0) {
      const room = this.c.chunkSamples - this.filling.length;
      const piece = x.subarray(0, room);
      x = x.subarray(piece.length);
      this.filling.push(piece, voiced > 0);
      if (this.filling.length < this.c.chunkSamples) break;
      // A whole chunk: step, unless it and everything before it since the last step is silence.
      const v = this.filling.voiced;
      this.unstepped.push(this.filling.take(this.filling.length), v);
      this.filling.clear();
      if (this.c.skipSilence && !this.unstepped.voiced) continue; // silence: no decode, no text
      out.push(await this.step());
      if (out[out.length - 1]!.capped) {
        // The caller ends the segment at this step; what follows goes to the next one.
        if (x.length > 0) this.filling.push(x.slice(), voiced > 0);
        break;
      }
    }
    return out;
  }

  /** The audio received but not stepped, removed from this decoder (after a cut at the last step). */
  takeHeld(): { samples: Float32Array; voiced: boolean } {
    const voiced = this.unstepped.voiced || this.filling.voiced;
    const a = this.unstepped.take(this.unstepped.length);
    const b = this.filling.take(this.filling.length);
    this.unstepped.clear();
    this.filling.clear();
    const all = new Float32Array(a.length + b.length);
    all.set(a);
    all.set(b, a.length);
    return { samples: all, voiced };
  }

  truncate(n: number): void {
    if (n >= this.fed) {
      const k = n - this.fed;
      if (k < this.unstepped.length) {
        this.unstepped.keep(k);
        this.filling.clear();
      } else {
        this.filling.keep(k - this.unstepped.length);
      }
      return;
    }
    // Audio already in the session goes back too.
    this.c.session.truncate(n);
    this.fed = n;
    this.unstepped.clear();
    this.filling.clear();
  }

  async finish(): Promise<SegmentStep | null> {
    if (this.filling.length > 0) {
      const v = this.filling.voiced;
      this.unstepped.push(this.filling.take(this.filling.length), v);
      this.filling.clear();
    }
    if (this.unstepped.length === 0 && this.stepped) return null; // the last step saw every sample
    if (this.fed + this.unstepped.length < this.c.model.info.minSamples) return null;
    return this.step(true);
  }

  private async step(finish = false): Promise<SegmentStep> {
    const c = this.c;
    const audio = this.unstepped.length > 0 ? this.unstepped.take(this.unstepped.length) : null;
    this.unstepped.clear();
    let prefix = '';
    let rolledBack = 0;
    if (this.steps >= c.unfixedChunks) {
      const next = this.nextPrefix(finish);
      prefix = next.text;
      rolledBack = next.rolledBack;
      this.committed = prefix;
    }
    const prompt = prefix === '' ? this.pieces : this.promptWith(prefix);
    const newSamples = audio?.length ?? 0;
    const info: LiveStepInfo = {
      step: this.steps,
      newSeconds: newSamples / c.sampleRate,
      segmentSeconds: (this.fed + newSamples) / c.sampleRate,
      rolledBack,
    };
    const r = await engineStep(c.model, c.session, audio, prompt, {
      reset: !this.stepped,
      incremental: true,
      maxNewTokens: Math.max(1, Math.floor(c.budget(info))),
      checkAbort: c.checkAbort,
    });
    this.stepped = true;
    this.fed += newSamples;
    this.steps++;
    this.rawText = prefix + r.text;
    const [language, text] = parseAsrOutputOfficial(this.rawText, c.language);
    this.text = text;
    this.language = language;
    // What the next step keeps: fixed from now on.
    let stable = '';
    let capped = false;
    if (this.steps >= c.unfixedChunks) {
      const next = this.nextPrefix(false);
      capped = next.tokens >= c.maxPrefixTokens;
      const [, stableText] = parseAsrOutputOfficial(next.text, c.language);
      stable = commonPrefix(stableText, text);
    }
    return { text, stable, language, covered: this.fed, stats: r.stats, capped };
  }

  /**
   * The prefix of the next step: the official rollback (the last answer re-encoded minus `unfixedTokens`, backing
   * off while the text would end in U+FFFD; at a finish, the official finish rule), but never shorter than the
   * prefix already fed, and at most maxPrefixTokens tokens.
   */
  private nextPrefix(finish: boolean): { text: string; tokens: number; rolledBack: number } {
    const c = this.c;
    const tok = c.tokenizer;
    const ids = tok.encode(this.rawText);
    let end = Math.max(finish ? 1 : 0, ids.length - c.unfixedTokens);
    end = Math.min(end, c.maxPrefixTokens);
    let text = end > 0 ? tok.decode(ids.slice(0, end)) : '';
    while (!finish && end > 0 && text.includes('\ufffd')) {
      end--;
      text = end > 0 ? tok.decode(ids.slice(0, end)) : '';
    }
    if (text.length < this.committed.length || !text.startsWith(this.committed)) {
      text = this.committed;
      end = tok.encode(text).length;
    }
    return { text, tokens: end, rolledBack: Math.max(0, ids.length - end) };
  }
}

/** Exact mode: the official loop on one segment. */
class ExactSegment implements SegmentDecoder {
  private readonly loop: OfficialStreaming;
  private first = true;

  constructor(private readonly c: SegmentContext, chunkSeconds: number) {
    const generate: GenerateFn = async (req) => {
      const info: LiveStepInfo = {
        step: req.chunkId,
        newSeconds: req.newAudio.length / c.sampleRate,
        segmentSeconds: req.audio.length / c.sampleRate,
        rolledBack: 0,
      };
      const r = await engineStep(c.model, c.session, req.newAudio, req.prompt, {
        reset: this.first,
        incremental: false,
        maxNewTokens: Math.max(1, Math.floor(c.budget(info))),
        checkAbort: c.checkAbort,
      });
      this.first = false;
      this.lastStats = r.stats;
      return { text: r.text, ids: r.ids, audioTokens: r.start.audioTokens };
    };
    this.loop = new OfficialStreaming(c.tokenizer, {
      context: c.context,
      language: c.language,
      supportedLanguages: c.model.info.supportLanguages,
      unfixedChunks: c.unfixedChunks,
      unfixedTokens: c.unfixedTokens,
      chunkSeconds,
      sampleRate: c.sampleRate,
    }, generate);
  }

  private lastStats: LiveStepStats | undefined;

  get text(): string {
    return this.loop.text;
  }

  get language(): string {
    return this.loop.language;
  }

  async push(samples: Float32Array): Promise<SegmentStep[]> {
    const steps = await this.loop.push(samples);
    return steps.map((s) => ({ text: s.text, stable: '', language: s.language, covered: s.request.audio.length, stats: this.lastStats!, capped: false }));
  }

  truncate(n: number): void {
    if (n < this.loop.accumulated) this.c.session.truncate(n);
    this.loop.truncate(n);
  }

  async finish(): Promise<SegmentStep | null> {
    if (this.loop.accumulated + this.loop.buffered < this.c.model.info.minSamples) return null;
    const s = await this.loop.finish();
    if (!s) return null;
    return { text: s.text, stable: '', language: s.language, covered: s.request.audio.length, stats: this.lastStats!, capped: false };
  }
}

function positiveInt(v: unknown, name: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new RustAsrError('INVALID_OPTION', `${name} must be an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

/**
 * Live recognition over one stream: push 16 kHz audio as it arrives, get events through `onEvent`. One native
 * session per stream (a new segment resets it). push() resolves once the steps the audio completed have run,
 * so a caller that awaits it gives its source backpressure.
 */
export class LiveRecognizer {
  private readonly session: NativeSession;
  private readonly endpointer: Endpointer | undefined;
  private readonly ctx: Omit<SegmentContext, 'context'> & { baseContext: string };
  private readonly exact: boolean;
  private readonly chunkSeconds: number;
  private readonly pastText: boolean;
  private decoder: SegmentDecoder | undefined;
  private segIndex = -1;
  private segStart = 0;
  /** Samples of the current segment received. */
  private segSamples = 0;
  private lastFinal = '';
  private pos = 0;
  private aborted = false;
  private closed = false;
  private readonly sampleRate: number;
  private readonly onAbort: () => void;

  constructor(
    private readonly model: Model,
    private readonly opts: LiveOptions,
    private readonly onEvent: (e: LiveEvent) => void,
  ) {
    if (model.disposed) throw new RustAsrError('INVALID_ARGUMENT', 'the model has been disposed');
    const o = opts;
    this.exact = o.exact ?? false;
    if (typeof this.exact !== 'boolean') throw new RustAsrError('INVALID_OPTION', 'exact must be a boolean');
    const endpoint = o.endpoint ?? true;
    if (typeof endpoint !== 'boolean') throw new RustAsrError('INVALID_OPTION', 'endpoint must be a boolean');
    this.chunkSeconds = o.chunkSeconds ?? LIVE_DEFAULTS.chunkSeconds;
    if (typeof this.chunkSeconds !== 'number' || !(this.chunkSeconds > 0) || this.chunkSeconds > 60) {
      throw new RustAsrError('INVALID_OPTION', `chunkSeconds must be a number in (0, 60], got ${String(o.chunkSeconds)}`);
    }
    const unfixedChunks = positiveInt(o.unfixedChunks ?? LIVE_DEFAULTS.unfixedChunks, 'unfixedChunks', 0);
    const unfixedTokens = positiveInt(o.unfixedTokens ?? LIVE_DEFAULTS.unfixedTokens, 'unfixedTokens', 0);
    const maxPrefixTokens = positiveInt(o.maxPrefixTokens ?? LIVE_DEFAULTS.maxPrefixTokens, 'maxPrefixTokens', 1);
    const mnt = o.maxNewTokens ?? LIVE_DEFAULTS.maxNewTokens;
    let budget: (info: LiveStepInfo) => number;
    if (typeof mnt === 'function') budget = mnt;
    else {
      const n = positiveInt(mnt, 'maxNewTokens');
      budget = () => n;
    }
    checkContext(o.context);
    this.pastText = o.pastText ?? false;
    if (typeof this.pastText !== 'boolean') throw new RustAsrError('INVALID_OPTION', 'pastText must be a boolean');
    this.sampleRate = model.info.sampleRate;
    const language =
      o.language === undefined || o.language === '' ? undefined : normalizeLanguage(o.language, model.info.supportLanguages);
    this.endpointer = endpoint
      ? new Endpointer({
          sampleRate: this.sampleRate,
          maxSegmentSeconds: o.maxSegmentSeconds ?? LIVE_DEFAULTS.maxSegmentSeconds,
          minSilenceMs: o.minSilenceMs,
          thresholdDb: o.thresholdDb,
          relativeDb: o.relativeDb,
        } satisfies EndpointOptions)
      : undefined;
    this.session = model.createSession();
    this.onAbort = () => this.abort();
    if (o.signal) {
      if (o.signal.aborted) this.aborted = true;
      else o.signal.addEventListener('abort', this.onAbort, { once: true });
    }
    this.ctx = {
      model,
      session: this.session,
      tokenizer: model.tokenizer,
      baseContext: o.context ?? '',
      language,
      chunkSamples: Math.max(1, Math.round(this.chunkSeconds * this.sampleRate)),
      unfixedChunks,
      unfixedTokens,
      budget,
      maxPrefixTokens,
      skipSilence: endpoint,
      checkAbort: () => this.checkAbort(),
      sampleRate: this.sampleRate,
    };
  }

  private checkAbort(): void {
    if (this.aborted || this.opts.signal?.aborted) throw abortError(this.opts.signal?.reason);
  }

  /** Stops the step in flight (it rejects with ABORTED) and every later call. */
  abort(): void {
    this.aborted = true;
    this.session.cancel();
  }

  /** Frees the native session (after the step in flight, if any). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    this.session.dispose();
  }

  /** Stream time in seconds of the audio pushed so far. */
  get seconds(): number {
    return this.pos / this.sampleRate;
  }

  /** Feeds 16 kHz mono audio. */
  async push(samples: Float32Array): Promise<void> {
    this.checkAbort();
    this.pos += samples.length;
    if (this.endpointer) {
      for (const e of this.endpointer.push(samples)) await this.handle(e);
    } else {
      if (!this.decoder) await this.handle({ type: 'start', sample: this.pos - samples.length });
      await this.handle({ type: 'audio', samples, voiced: 1 });
    }
  }

  /** Ends the input: the open segment gets its final. */
  async end(): Promise<void> {
    this.checkAbort();
    if (this.endpointer) {
      for (const e of this.endpointer.end()) await this.handle(e);
    } else if (this.decoder) {
      await this.handle({ type: 'end', sample: this.segStart + this.segSamples, reason: 'input' });
    }
  }

  private async handle(e: EndpointEvent): Promise<void> {
    this.checkAbort();
    switch (e.type) {
      case 'start': {
        this.segIndex++;
        this.segStart = e.sample;
        this.segSamples = 0;
        const context = this.pastText && this.lastFinal !== '' ? joinContext(this.ctx.baseContext, this.lastFinal) : this.ctx.baseContext;
        const c: SegmentContext = { ...this.ctx, context };
        this.decoder = this.exact ? new ExactSegment(c, this.chunkSeconds) : new FastSegment(c);
        return;
      }
      case 'audio': {
        const d = this.decoder!;
        this.segSamples += e.samples.length;
        const steps = await d.push(e.samples, e.voiced);
        for (const s of steps) {
          this.emitPartial(s);
          if (s.capped) {
            // The prefix cap: end the segment here, as a length cut, and go on with a new one.
            await this.finishSegment(this.segStart + s.covered, 'length', true);
            return;
          }
        }
        return;
      }
      case 'end':
        await this.finishSegment(e.sample, e.reason, false);
        return;
    }
  }

  private async finishSegment(cut: number, reason: FinalEvent['reason'], restart: boolean): Promise<void> {
    const d = this.decoder;
    if (!d) return;
    // After a prefix-cap cut (at the last step), the audio the decoder holds beyond it starts the next segment.
    const rest = restart && d instanceof FastSegment ? d.takeHeld() : undefined;
    d.truncate(cut - this.segStart);
    const s = await d.finish();
    const text = s ? s.text : d.text;
    const language = s ? s.language : d.language;
    const final: FinalEvent = {
      type: 'final',
      segment: this.segIndex,
      text,
      start: this.segStart / this.sampleRate,
      end: cut / this.sampleRate,
      language: language === '' ? undefined : language,
      reason,
    };
    if (s) final.step = s.stats;
    this.onEvent(final);
    if (text !== '') this.lastFinal = text;
    this.decoder = undefined;
    if (rest) {
      await this.handle({ type: 'start', sample: cut });
      if (rest.samples.length > 0) await this.handle({ type: 'audio', samples: rest.samples, voiced: rest.voiced ? 1 : 0 });
    }
  }

  private emitPartial(s: SegmentStep): void {
    this.onEvent({
      type: 'partial',
      segment: this.segIndex,
      text: s.text,
      stable: s.stable,
      unstable: s.text.slice(s.stable.length),
      audioSeconds: (this.segStart + s.covered) / this.sampleRate,
      start: this.segStart / this.sampleRate,
      language: s.language === '' ? undefined : s.language,
      step: s.stats,
    });
  }
}

function joinContext(base: string, past: string): string {
  return base === '' ? past : `${base}\n${past}`;
}
