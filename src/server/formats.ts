// Response bodies of POST /v1/audio/transcriptions, in OpenAI's shapes.
import type { TranscribeResult } from '../api/transcribe.js';
import { formatSubtitles } from '../text/subtitles.js';

export const RESPONSE_FORMATS = ['json', 'text', 'srt', 'vtt', 'verbose_json'] as const;
export type ResponseFormat = (typeof RESPONSE_FORMATS)[number];

/** A word with its times (verbose_json with `timestamp_granularities[]=word`, once word timestamps exist). */
export interface WordTiming {
  word: string;
  start: number;
  end: number;
}

/** One entry of verbose_json's `segments`: the fields rustasr measures (no log-probabilities: decoding is greedy). */
export interface VerboseSegment {
  id: number;
  start: number;
  end: number;
  text: string;
  tokens: number[];
  temperature: number;
}

export interface VerboseJson {
  task: 'transcribe';
  language: string;
  duration: number;
  text: string;
  segments: VerboseSegment[];
  words?: WordTiming[];
  usage: { type: 'duration'; seconds: number };
}

/** OpenAI reports the language as a lower-case name ('english'); merged ones stay comma-separated. */
function languageOf(r: TranscribeResult): string {
  return (r.language ?? '').toLowerCase();
}

export function verboseJson(r: TranscribeResult, words?: WordTiming[]): VerboseJson {
  const body: VerboseJson = {
    task: 'transcribe',
    language: languageOf(r),
    duration: r.timings.audioSeconds,
    text: r.text,
    segments: r.segments.map((s, i) => ({ id: i, start: s.start, end: s.end, text: s.text, tokens: s.tokens, temperature: 0 })),
    usage: { type: 'duration', seconds: r.timings.audioSeconds },
  };
  if (words !== undefined) body.words = words;
  return body;
}

/** The response body and content type for a finished transcription. */
export function formatResult(format: ResponseFormat, r: TranscribeResult, words?: WordTiming[]): { contentType: string; body: string } {
  switch (format) {
    case 'json':
      return {
        contentType: 'application/json',
        body: JSON.stringify({ text: r.text, usage: { type: 'duration', seconds: r.timings.audioSeconds } }),
      };
    case 'verbose_json':
      return { contentType: 'application/json', body: JSON.stringify(verboseJson(r, words)) };
    case 'text':
      return { contentType: 'text/plain; charset=utf-8', body: `${r.text}\n` };
    case 'srt':
      return { contentType: 'application/x-subrip; charset=utf-8', body: formatSubtitles('srt', r.segments) };
    case 'vtt':
      return { contentType: 'text/vtt; charset=utf-8', body: formatSubtitles('vtt', r.segments) };
  }
}
