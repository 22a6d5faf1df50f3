// rustasr/rx: the recogniser as an rxjs Observable (rxjs is an optional peer dependency).
import { Observable } from 'rxjs';

import { listen, type ListenOptions, type LiveEvent, type LiveSource } from './api/listen.js';
import { recognize, type AudioInput } from './api/recognize.js';
import type { RecognizeOptions } from './api/transcriber.js';
import type { Token } from './stages/tokens.js';

export type { AudioInput } from './api/recognize.js';
export type { RecognizeOptions } from './api/transcriber.js';
export type { Token } from './stages/tokens.js';
export type { ListenOptions, LiveEvent, LiveSource } from './api/listen.js';

/**
 * A cold Observable of the Tokens of `input`: each subscription starts its own recognition. It completes
 * when decoding ends and errors with the RustAsrError of a failure. Unsubscribing aborts decoding (it stops
 * between two steps and the native session is freed); an abort of `opts.signal` errors with code ABORTED.
 */
export function recognize$(input: AudioInput, opts: RecognizeOptions): Observable<Token> {
  return new Observable<Token>((subscriber) => {
    const unsubscribed = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, unsubscribed.signal]) : unsubscribed.signal;
    const stream = recognize(input, { ...opts, signal });
    (async () => {
      try {
        for await (const token of stream) {
          if (subscriber.closed) break;
          subscriber.next(token);
        }
        subscriber.complete();
      } catch (err) {
        if (!unsubscribed.signal.aborted) subscriber.error(err);
      }
    })();
    return () => unsubscribed.abort();
  });
}

/**
 * A cold Observable of the live events of `source` (see listen()): partial hypotheses while the audio
 * arrives, a final per segment. Unsubscribing aborts (the native session is freed).
 */
export function listen$(source: LiveSource, opts: ListenOptions): Observable<LiveEvent> {
  return new Observable<LiveEvent>((subscriber) => {
    const unsubscribed = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, unsubscribed.signal]) : unsubscribed.signal;
    const stream = listen(source, { ...opts, signal });
    (async () => {
      try {
        for await (const e of stream) {
          if (subscriber.closed) break;
          subscriber.next(e as LiveEvent);
        }
        subscriber.complete();
      } catch (err) {
        if (!unsubscribed.signal.aborted) subscriber.error(err);
      }
    })();
    return () => unsubscribed.abort();
  });
}
