// Early stop for runaway repetition: decoding a loop ("I think I think I think ...") to maxNewTokens costs
// seconds, and the official clean-up (detect_and_fix_repetitions, see asr-output.ts) then removes what was
// decoded. The guard watches the generated ids and says when the rest of the budget cannot change the
// cleaned result, assuming the loop goes on: decoding can stop there.
//
// It stops after token n when all of these hold:
//
//  1. the last ids repeat with a period of p tokens (p <= maxPeriod), over at least two whole cycles;
//  2. the text of that periodic tail is at least 20 repeats of a 1-20 character pattern (the official
//     threshold; 20+ identical characters is the 1-character case) - a repetition the clean-up removes;
//  3. the budget left, maxTokens - n, is a whole number of cycles, so the full-length output (the loop
//     continued to maxTokens) ends at the same place in the cycle as the output so far;
//  4. the clean-up of the output so far equals the clean-up of that full-length output, computed by
//     extending the ids with the cycle (no model step) and decoding them.
//
// So when the model would indeed have looped to the end, the cleaned result is exactly the one the full
// decode gives (4), and the ids it reports are the ids it generated. A model that leaves its loop before
// maxTokens (an EOS, new text) is the one case where the full decode could differ: the guard cannot see
// the future, so it only stops on a loop the clean-up collapses anyway (2).

import { REPETITION_MAX_PATTERN, REPETITION_THRESHOLD, detectAndFixRepetitions, pyStrip } from './asr-output.js';

export interface RepetitionGuardOptions {
  /** The decode budget (maxNewTokens): where the full-length output ends. */
  maxTokens: number;
  /** The text of an id sequence, as the final text is decoded (e.g. `tokenizer.decode(ids, { skipSpecial: true })`). */
  decode: (ids: readonly number[]) => string;
  /**
   * The clean-up whose result must not change, raw text in, any comparable string out (default: the official
   * `strip` + `detect_and_fix_repetitions`). The SDK passes the whole official output parsing (language and text).
   */
  clean?: (raw: string) => string;
  /** Longest token cycle looked for (default 64). */
  maxPeriod?: number;
}

/** Default longest token cycle. Loops seen in practice are a few tokens; 64 covers a short sentence. */
export const DEFAULT_MAX_PERIOD = 64;

const defaultClean = (raw: string): string => detectAndFixRepetitions(pyStrip(raw));

/** Smallest k in 1..maxK with cps[i] === cps[i + k] for every i, or 0 when none. */
function smallestPeriod(cps: readonly string[], maxK: number): number {
  for (let k = 1; k <= maxK && k < cps.length; k++) {
    let ok = true;
    for (let i = 0; i + k < cps.length; i++) {
      if (cps[i] !== cps[i + k]) {
        ok = false;
        break;
      }
    }
    if (ok) return k;
  }
  return 0;
}

export class RepetitionGuard {
  private readonly ids: number[] = [];
  /** run[p]: how many trailing positions i have ids[i] === ids[i - p]. */
  private readonly run: Int32Array;
  private readonly maxTokens: number;
  private readonly maxPeriod: number;
  private readonly decode: (ids: readonly number[]) => string;
  private readonly clean: (raw: string) => string;
  private stopAt: { period: number; tokens: number } | undefined;
  /** Extension checks (rule 4) run so far: each costs two decodes and two clean-ups. */
  checks = 0;

  constructor(opts: RepetitionGuardOptions) {
    if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 1) throw new RangeError('maxTokens must be a positive integer');
    this.maxTokens = opts.maxTokens;
    this.maxPeriod = opts.maxPeriod ?? DEFAULT_MAX_PERIOD;
    if (!Number.isInteger(this.maxPeriod) || this.maxPeriod < 1) throw new RangeError('maxPeriod must be a positive integer');
    this.decode = opts.decode;
    this.clean = opts.clean ?? defaultClean;
    this.run = new Int32Array(this.maxPeriod + 1);
  }

  /** True once push() has said stop. */
  get stopped(): boolean {
    return this.stopAt !== undefined;
  }

  /** The token cycle the guard stopped on (undefined while it has not). */
  get period(): number | undefined {
    return this.stopAt?.period;
  }

  /** Decode steps the stop saved: maxTokens minus the tokens generated (0 while it has not stopped). */
  get savedSteps(): number {
    return this.stopAt ? this.maxTokens - this.stopAt.tokens : 0;
  }

  /** Feeds the next generated id; true when decoding can stop after it. */
  push(id: number): boolean {
    if (this.stopAt) return true;
    const ids = this.ids;
    ids.push(id);
    const n = ids.length;
    for (let p = 1; p <= this.maxPeriod; p++) this.run[p] = n > p && ids[n - 1 - p] === id ? this.run[p]! + 1 : 0;
    const left = this.maxTokens - n;
    if (left <= 0) return false;
    for (let p = 1; p <= this.maxPeriod; p++) {
      // Rules 1 and 3: a cycle seen twice in a row, ending where the full-length output would.
      if (this.run[p]! < p || left % p !== 0 || this.coveredByDivisor(p)) continue;
      if (this.check(p)) {
        this.stopAt = { period: p, tokens: n };
        return true;
      }
    }
    return false;
  }

  /** A divisor q of p that is periodic over at least p's span extends the ids exactly as p would. */
  private coveredByDivisor(p: number): boolean {
    const span = this.run[p]! + p;
    for (let q = 1; q < p; q++) if (p % q === 0 && this.run[q]! + q >= span) return true;
    return false;
  }

  private check(p: number): boolean {
    const ids = this.ids;
    const n = ids.length;
    // Rule 2: the periodic tail (whole cycles back from the end) is >= 20 repeats of a <= 20-character pattern.
    const span = Math.floor((this.run[p]! + p) / p) * p;
    const tail = Array.from(this.decode(ids.slice(n - span)));
    const k = smallestPeriod(tail, REPETITION_MAX_PATTERN);
    if (k === 0 || tail.length < REPETITION_THRESHOLD * k) return false;
    // Rule 4: the clean-up of the output so far equals that of the loop continued to maxTokens.
    this.checks++;
    const cycle = ids.slice(n - p);
    const full = ids.slice();
    while (full.length < this.maxTokens) full.push(...cycle);
    return this.clean(this.decode(ids)) === this.clean(this.decode(full));
  }
}
