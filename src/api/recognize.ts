// recognize(): any audio input -> an async-iterable stream of Tokens.
import { pipeline, type Readable } from 'node:stream';

import { sourceFor, type AudioInput } from './sources.js';
import { Transcriber, type RecognizeOptions } from './transcriber.js';

export type { AudioInput } from './sources.js';

/**
 * Recognises `input`, returning the Transcriber it is piped into: iterate it (`for await (const t of
 * recognize(...))`) for Tokens as they are decoded; `language`, `segments` and `timings` fill in as it
 * goes. Do not write to it. Errors (bad input, bad options, abort) surface from the iteration.
 */
export function recognize(input: AudioInput, opts: RecognizeOptions): Transcriber {
  let src: { source: Readable; input: 'bytes' | 'audio'; path?: string };
  try {
    src = sourceFor(input);
  } catch (err) {
    const t = new Transcriber({ ...opts });
    queueMicrotask(() => t.destroy(err as Error));
    return t;
  }
  const t = new Transcriber({ ...opts, input: src.input, sourcePath: src.path });
  // Errors reach `t` (pipeline destroys every stream with the first error); nothing to do here.
  pipeline(src.source, t, () => {});
  return t;
}
