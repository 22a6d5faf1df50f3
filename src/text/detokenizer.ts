// Incremental, UTF-8-safe detokenisation: token ids in, text out as soon as whole characters are known.
// The `language X<asr_text>` header the model writes before the transcript is split off into `language`.
import type { AsrTokenizer } from './tokenizer.js';

const ASR_TEXT = '<asr_text>';
const HEADER_PREFIX = 'language ';

export class StreamingDetokenizer {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  private pending = '';
  private headerDone: boolean;
  language: string | undefined;

  /** `expectHeader`: false when the language was forced (the prompt already holds the header). */
  constructor(
    private readonly tokenizer: AsrTokenizer,
    expectHeader = true,
  ) {
    this.headerDone = !expectHeader;
  }

  /** Feeds one token id; returns the text that became final (possibly ''). */
  push(id: number): string {
    const bytes = this.tokenizer.tokenBytes(id);
    return this.emit(this.decoder.decode(bytes, { stream: true }));
  }

  /** Flushes what is left at the end of decoding. */
  end(): string {
    const rest = this.emit(this.decoder.decode());
    if (this.headerDone) return rest;
    // No header was ever completed: everything held back is plain text.
    this.headerDone = true;
    const out = rest + this.pending;
    this.pending = '';
    return out;
  }

  private emit(text: string): string {
    if (this.headerDone) return text;
    this.pending += text;
    const at = this.pending.indexOf(ASR_TEXT);
    if (at >= 0) {
      const header = this.pending.slice(0, at);
      if (header.startsWith(HEADER_PREFIX)) {
        const lang = header.slice(HEADER_PREFIX.length).trim();
        this.language = lang && lang !== 'None' ? lang : undefined;
      }
      const out = this.pending.slice(at + ASR_TEXT.length);
      this.pending = '';
      this.headerDone = true;
      return out;
    }
    // Still possibly a header: keep holding while the text could grow into `language ...<asr_text>`.
    const couldBeHeader =
      HEADER_PREFIX.startsWith(this.pending) || (this.pending.startsWith(HEADER_PREFIX) && !this.pending.includes('\n'));
    if (couldBeHeader) return '';
    this.headerDone = true;
    const out = this.pending;
    this.pending = '';
    return out;
  }
}
