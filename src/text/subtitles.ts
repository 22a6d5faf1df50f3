// Subtitle cues (SRT and WebVTT) for decoded segments: shared by `rustasr infer --format srt|vtt` and the
// server's `response_format=srt|vtt`.
import type { SegmentResult } from '../stages/tokens.js';

function timestamp(seconds: number, sep: ',' | '.'): string {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor(ms / 60_000) % 60;
  const s = Math.floor(ms / 1000) % 60;
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${pad(h)}:${pad(m)}:${pad(s)}${sep}${pad(ms % 1000, 3)}`;
}

/** One subtitle cue (SRT or WebVTT) for a segment; `n` is the 1-based cue number. */
export function formatCue(format: 'srt' | 'vtt', n: number, seg: Pick<SegmentResult, 'start' | 'end' | 'text'>): string {
  const sep = format === 'srt' ? ',' : '.';
  const head = format === 'srt' ? `${n}\n` : '';
  return `${head}${timestamp(seg.start, sep)} --> ${timestamp(seg.end, sep)}\n${seg.text}\n\n`;
}

/** A whole subtitle file: WebVTT starts with its 'WEBVTT' line; segments with no text get no cue. */
export function formatSubtitles(format: 'srt' | 'vtt', segments: readonly Pick<SegmentResult, 'start' | 'end' | 'text'>[]): string {
  let out = format === 'vtt' ? 'WEBVTT\n\n' : '';
  let n = 0;
  for (const seg of segments) if (seg.text !== '') out += formatCue(format, ++n, seg);
  return out;
}
