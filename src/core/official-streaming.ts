// The official Qwen3-ASR streaming algorithm (qwen_asr/inference/qwen3_asr.py: init_streaming_state,
// streaming_transcribe, finish_streaming_transcribe), reproduced step for step. It is live recognition's exact
// mode and the reference the fast mode is measured against.
//
//  - Audio is buffered; each time a whole chunk (round(chunkSeconds * 16000) samples) is there, it is moved to
//    the accumulated audio and the model runs on *all* audio so far.
//  - The prompt is the chat prompt (plus `language X<asr_text>` when forced), followed by a text prefix: empty
//    for the first `unfixedChunks` chunks, then the previous raw answer re-encoded minus its last
//    `unfixedTokens` tokens, backing off further while the decoded prefix holds U+FFFD.
//  - The raw answer becomes prefix + generated text; the published text is parse_asr_output of it.
//  - finish() runs once more on the leftover tail (any length), with end = max(1, len - unfixedTokens) and no
//    U+FFFD check, as the official code does.
//
// The generate step is injected (GenerateFn): the engine for real use, a script in tests (the golden scripted
// cases replace it with fixed texts).
import { RustAsrError } from '../errors.js';
import { parseAsrOutputOfficial } from '../text/asr-output.js';
import { promptPieces, type PromptPieces } from '../text/prompt.js';
import type { AsrTokenizer } from '../text/tokenizer.js';

/** Python's round() (half to even), as `int(round(chunk_size_sec * 16000))` uses it. */
function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export interface OfficialStreamingOptions {
  /** System-prompt context. */
  context?: string;
  /** Forced language (already normalised to the model's spelling), or undefined to detect. */
  language?: string;
  /** Languages the model supports (for the prompt's validation). */
  supportedLanguages?: readonly string[];
  /** Chunks decoded with an empty prefix before the rollback starts (official default 2). */
  unfixedChunks?: number;
  /** Tokens rolled back from the previous answer (official default 5). */
  unfixedTokens?: number;
  /** Seconds of audio per step (official default 2.0). */
  chunkSeconds?: number;
  /** Sample rate of the audio (16000). */
  sampleRate?: number;
}

/** One call of the model: what the official loop hands to `generate`. */
export interface GenerateRequest {
  /** The official chunk_id of the step. */
  chunkId: number;
  /** true for the finish call. */
  finish: boolean;
  /** The text prefix (rolled-back previous answer). */
  prefix: string;
  /** The prompt around the audio, prefix included (its text: `before + <|audio_pad|> + after`). */
  prompt: PromptPieces;
  /** All audio so far. */
  audio: Float32Array;
  /** The samples that are new since the previous request (the tail of `audio`). */
  newAudio: Float32Array;
}

/** What generate returns: the new text (special tokens skipped) and, for the engine, the ids. */
export interface GenerateResult {
  text: string;
  /** Generated ids, the EOS included when it stopped on one (the engine only). */
  ids?: number[];
  /** Audio tokens of the prompt (the engine only). */
  audioTokens?: number;
}

export type GenerateFn = (req: GenerateRequest) => Promise<GenerateResult>;

/** The rollback of a step: the re-encoded previous answer, the cut and the final k (derived, for tests). */
export interface Rollback {
  curIds: number[];
  endIdx: number;
  k: number;
}

/** One step that ran the model. */
export interface OfficialStep {
  chunkId: number;
  finish: boolean;
  prefix: string;
  rollback?: Rollback;
  request: GenerateRequest;
  result: GenerateResult;
  /** The raw answer after the step (prefix + generated text). */
  rawDecoded: string;
  /** parse_asr_output of it: language ('' when none) and text. */
  language: string;
  text: string;
}

class Samples {
  private buf = new Float32Array(0);
  length = 0;
  append(x: Float32Array): void {
    if (this.length + x.length > this.buf.length) {
      const grown = new Float32Array(Math.max(this.length + x.length, this.buf.length * 2, 1024));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    }
    this.buf.set(x, this.length);
    this.length += x.length;
  }
  view(from = 0, to = this.length): Float32Array {
    return this.buf.subarray(from, to);
  }
  shift(n: number): void {
    this.buf.copyWithin(0, n, this.length);
    this.length -= n;
  }
}

/** The official streaming state (ASRStreamingState) and its two calls. */
export class OfficialStreaming {
  readonly chunkSamples: number;
  readonly unfixedChunks: number;
  readonly unfixedTokens: number;
  chunkId = 0;
  language = '';
  text = '';
  rawDecoded = '';
  private readonly buffer = new Samples();
  private readonly accum = new Samples();
  private readonly forced: string | undefined;

  constructor(
    private readonly tokenizer: AsrTokenizer,
    private readonly opts: OfficialStreamingOptions,
    private readonly generate: GenerateFn,
  ) {
    const chunkSeconds = opts.chunkSeconds ?? 2.0;
    if (!(typeof chunkSeconds === 'number' && chunkSeconds > 0 && Number.isFinite(chunkSeconds))) {
      throw new RustAsrError('INVALID_OPTION', `chunkSeconds must be > 0, got ${String(chunkSeconds)}`);
    }
    this.chunkSamples = Math.max(1, pyRound(chunkSeconds * (opts.sampleRate ?? 16000)));
    this.unfixedChunks = opts.unfixedChunks ?? 2;
    this.unfixedTokens = opts.unfixedTokens ?? 5;
    for (const [name, v] of [['unfixedChunks', this.unfixedChunks], ['unfixedTokens', this.unfixedTokens]] as const) {
      if (!Number.isInteger(v) || v < 0) throw new RustAsrError('INVALID_OPTION', `${name} must be a non-negative integer, got ${String(v)}`);
    }
    this.forced = opts.language;
    // Validates the context and language now, as init_streaming_state does.
    this.pieces('');
  }

  /** Samples waiting for a whole chunk. */
  get buffered(): number {
    return this.buffer.length;
  }

  /** Samples given to the model so far. */
  get accumulated(): number {
    return this.accum.length;
  }

  private pieces(prefix: string): PromptPieces {
    return promptPieces(this.tokenizer, {
      context: this.opts.context ?? '',
      language: this.forced,
      supportedLanguages: this.opts.supportedLanguages,
      prefixText: prefix,
    });
  }

  /**
   * Cuts the audio back to its first n samples (an endpoint behind audio already given: not part of the
   * official loop, which has no endpoints). The next step runs on what is left.
   */
  truncate(n: number): void {
    if (n >= this.accum.length + this.buffer.length) return;
    if (n >= this.accum.length) {
      this.buffer.length = n - this.accum.length;
      return;
    }
    this.accum.length = n;
    this.buffer.length = 0;
  }

  /** streaming_transcribe: buffers `samples` and runs one step per whole chunk. */
  async push(samples: Float32Array): Promise<OfficialStep[]> {
    if (samples.length > 0) this.buffer.append(samples);
    const steps: OfficialStep[] = [];
    while (this.buffer.length >= this.chunkSamples) {
      const chunk = this.buffer.view(0, this.chunkSamples).slice();
      this.buffer.shift(this.chunkSamples);
      this.accum.append(chunk);
      let prefix = '';
      let rollback: Rollback | undefined;
      if (this.chunkId >= this.unfixedChunks) {
        const curIds = this.tokenizer.encode(this.rawDecoded);
        let k = this.unfixedTokens;
        let endIdx: number;
        for (;;) {
          endIdx = Math.max(0, curIds.length - k);
          prefix = endIdx > 0 ? this.tokenizer.decode(curIds.slice(0, endIdx)) : '';
          if (!prefix.includes('\ufffd')) break;
          if (endIdx === 0) {
            prefix = '';
            break;
          }
          k += 1;
        }
        rollback = { curIds, endIdx, k };
      }
      steps.push(await this.run(prefix, rollback, chunk, false));
    }
    return steps;
  }

  /** finish_streaming_transcribe: runs the leftover tail, if any (null when the buffer is empty). */
  async finish(): Promise<OfficialStep | null> {
    if (this.buffer.length === 0) return null;
    const tail = this.buffer.view().slice();
    this.buffer.shift(this.buffer.length);
    this.accum.append(tail);
    let prefix = '';
    let rollback: Rollback | undefined;
    if (this.chunkId >= this.unfixedChunks) {
      const curIds = this.tokenizer.encode(this.rawDecoded);
      const endIdx = Math.max(1, curIds.length - this.unfixedTokens);
      prefix = this.tokenizer.decode(curIds.slice(0, endIdx));
      rollback = { curIds, endIdx, k: this.unfixedTokens };
    }
    return this.run(prefix, rollback, tail, true);
  }

  private async run(prefix: string, rollback: Rollback | undefined, newAudio: Float32Array, finish: boolean): Promise<OfficialStep> {
    const request: GenerateRequest = {
      chunkId: this.chunkId,
      finish,
      prefix,
      prompt: this.pieces(prefix),
      audio: this.accum.view(),
      newAudio,
    };
    const result = await this.generate(request);
    this.rawDecoded = prefix + result.text;
    const [language, text] = parseAsrOutputOfficial(this.rawDecoded, this.forced);
    this.language = language;
    this.text = text;
    const step: OfficialStep = { chunkId: this.chunkId, finish, prefix, request, result, rawDecoded: this.rawDecoded, language, text };
    if (rollback) step.rollback = rollback;
    this.chunkId += 1;
    return step;
  }
}
