// A plain incremental decoder over an AsrTokenizer's token bytes (UTF-8 safe across token boundaries): the
// reference the tests hold StreamingDetokenizer and the tokenizer's decode() to.
import type { AsrTokenizer, DecodeOptions } from '../../src/text/tokenizer.js';

export interface TokenStreamDecoder {
  /** Appends one id; returns the text that became complete (possibly ''). */
  push(id: number): string;
  /** Ends the stream; returns any pending incomplete bytes as U+FFFD. */
  flush(): string;
}

export function streamDecoder(tok: AsrTokenizer, opts?: DecodeOptions): TokenStreamDecoder {
  const dec = new TextDecoder('utf-8', { ignoreBOM: true });
  const skip = opts?.skipSpecial === true;
  return {
    push: (id: number): string => {
      if (skip && tok.isSpecial(id)) return '';
      return dec.decode(tok.tokenBytes(id), { stream: true });
    },
    flush: (): string => dec.decode(),
  };
}
