// Incremental, UTF-8-safe detokenisation: token ids in, text out as soon as whole characters are known.
// The `language X<asr_text>` header the model writes before the transcript is split off into `language`,
// parsed by the official parse_asr_output (asr-output.ts), the same code the final text goes through.
import { ASR_TEXT_TAG as ASR_TEXT, parseAsrOutputOfficial, pyStrip } from './asr-output.js';
import type { AsrTokenizer } from './tokenizer.js';

const HEADER_PREFIX = 'language ';
/** Held text longer than this without `<asr_text>` is not a header (language names are short). */
const MAX_HEADER_CHARS = 64;

/**
 * Length of the longest prefix of `b` that does not end inside a multi-byte UTF-8 sequence: a trailing
 * lead byte whose continuation bytes have not all arrived is held back. Invalid bytes are not held (they
 * decode to U+FFFD at once).
 */
export function completeUtf8Length(b: Uint8Array): number {
  const n = b.length;
  for (let back = 1; back <= Math.min(3, n); back++) {
    const c = b[n - back]!;
    if ((c & 0xc0) === 0x80) continue; // continuation byte: look further back
    const need = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

export interface StreamingDetokenizerOptions {
  /** Parse the `language X<asr_text>` header (default true; false when the language was forced). */
  expectHeader?: boolean;
  /** Give special added tokens (`<|im_end|>`, ...) no text, as `decode(ids, { skipSpecial: true })` does (default true). */
  skipSpecial?: boolean;
}

export class StreamingDetokenizer {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }); // keep a leading U+FEFF
  private readonly skipSpecial: boolean;
  /** Bytes of an incomplete UTF-8 sequence. */
  private bytes = new Uint8Array(0);
  /** Decoded text held back while it may still be the language header. */
  private held = '';
  private headerDone: boolean;
  /** The language named by the header, once parsed (undefined for `language None` or no header). */
  language: string | undefined;

  /** `expectHeader`: false when the language was forced (the prompt already holds the header). */
  constructor(
    private readonly tokenizer: AsrTokenizer,
    opts: boolean | StreamingDetokenizerOptions = {},
  ) {
    const o = typeof opts === 'boolean' ? { expectHeader: opts } : opts;
    this.headerDone = !(o.expectHeader ?? true);
    this.skipSpecial = o.skipSpecial ?? true;
  }

  /** True once the header has been parsed (or ruled out, or was never expected). */
  get headerParsed(): boolean {
    return this.headerDone;
  }

  /** True while text is held back: an incomplete UTF-8 character, or a header still being parsed. */
  get pending(): boolean {
    return this.bytes.length > 0 || this.held.length > 0;
  }

  /** Feeds one token id; returns the text that became final (possibly ''). */
  push(id: number): string {
    if (this.skipSpecial && this.tokenizer.isSpecial(id)) return '';
    const tb = this.tokenizer.tokenBytes(id);
    if (tb.length === 0) return '';
    let all: Uint8Array;
    if (this.bytes.length === 0) {
      all = tb;
    } else {
      all = new Uint8Array(this.bytes.length + tb.length);
      all.set(this.bytes);
      all.set(tb, this.bytes.length);
    }
    const k = completeUtf8Length(all);
    this.bytes = all.slice(k);
    return k === 0 ? '' : this.emit(this.decoder.decode(all.subarray(0, k)));
  }

  /** Flushes what is left at the end of decoding (an incomplete character becomes U+FFFD). */
  end(): string {
    const tail = this.bytes.length > 0 ? this.decoder.decode(this.bytes) : '';
    this.bytes = new Uint8Array(0);
    const rest = this.emit(tail);
    if (this.headerDone) return rest;
    // No header was ever completed: everything held back is plain text.
    this.headerDone = true;
    const out = rest + this.held;
    this.held = '';
    return out;
  }

  private emit(text: string): string {
    if (this.headerDone) return text;
    this.held += text;
    const at = this.held.indexOf(ASR_TEXT);
    if (at >= 0) {
      // The official parsing of the answer so far (header and tag): its language is the final text's.
      const [lang] = parseAsrOutputOfficial(this.held.slice(0, at + ASR_TEXT.length));
      this.language = lang === '' ? undefined : lang;
      const out = this.held.slice(at + ASR_TEXT.length);
      this.held = '';
      this.headerDone = true;
      return out;
    }
    // Still possibly a header: keep holding while the text could grow into `language ...<asr_text>` (as the
    // official parsing reads it: leading whitespace stripped, `language` in any case).
    const head = pyStrip(this.held).toLowerCase();
    const couldBeHeader =
      this.held.length <= MAX_HEADER_CHARS && (HEADER_PREFIX.startsWith(head) || head.startsWith(HEADER_PREFIX));
    if (couldBeHeader) return '';
    this.headerDone = true;
    const out = this.held;
    this.held = '';
    return out;
  }
}
