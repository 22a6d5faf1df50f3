// The addon's test/dev surface (built from source: RUSTASR_DEV unset or 1): sessions with the stage-by-stage
// calls, and the live-object counters.
import type { Model } from '../../src/core/model.js';
import { native, type NativeDevAligner, type NativeDevSession } from '../../src/native.js';

/** A native session of `model` with the dev calls (mel, encode, prefill, stepLogits). */
export function devSession(model: Model): NativeDevSession {
  const s = model.createSession() as NativeDevSession;
  if (typeof s.mel !== 'function') throw new Error('the addon was built without its dev surface');
  return s;
}

/** A native aligner of `model` (a forced aligner) with the dev call classify (a whole given input). */
export function devAligner(model: Model): NativeDevAligner {
  const a = model.createAligner() as NativeDevAligner;
  if (typeof a.classify !== 'function') throw new Error('the addon was built without its dev surface');
  return a;
}

/** Engine objects alive in this process. */
export function liveObjects(): { models: number; sessions: number; aligners: number } {
  return native().liveObjects();
}
