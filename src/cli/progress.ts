// Progress on the terminal: one status line on stderr, redrawn in place and erased when done, shown only
// when stderr is a TTY (and not with --quiet). It shares the terminal with the transcript when stdout is the
// same TTY: the line is erased before transcript text is written and not redrawn while a transcript line
// is open, so the two never mix. Hand-written (a few dozen lines): see docs/cli.md for why not a library.
import type { LoadProgress } from '../hub/progress.js';
import type { TranscribeProgress } from '../api/transcriber.js';

export interface Terminal {
  /** Writes transcript text to stdout (erasing the status line first when both are on one terminal). */
  out(s: string): Promise<void>;
  /** Writes a whole line to stderr on its own line (erasing the status line first, redrawing it after). */
  note(line: string): void;
  /** Shows `text` as the status line (throttled; nothing when disabled). */
  status(text: string, force?: boolean): void;
  /** Erases the status line for good. */
  done(): void;
  /** Whether a status line is shown at all. */
  readonly enabled: boolean;
}

type Out = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

/** Least time between two redraws. */
const REDRAW_MS = 100;

export function terminal(stdout: Out, stderr: Out, opts: { quiet: boolean }): Terminal {
  const enabled = stderr.isTTY === true && !opts.quiet;
  const shared = enabled && stdout.isTTY === true;
  let shown = '';
  let wanted = '';
  let lastDraw = 0;
  let lineOpen = false;
  const width = () => Math.max(20, (stderr.columns !== undefined && stderr.columns > 0 ? stderr.columns : 80) - 1);
  const erase = () => {
    if (shown !== '') {
      stderr.write('\r\x1b[K');
      shown = '';
    }
  };
  const draw = () => {
    if (!enabled || wanted === '' || (shared && lineOpen)) return;
    const text = wanted.length > width() ? wanted.slice(0, width() - 1) + '…' : wanted;
    stderr.write(`\r${text}\x1b[K`);
    shown = text;
    lastDraw = Date.now();
  };
  return {
    enabled,
    async out(s) {
      if (s === '') return;
      if (shared) erase();
      lineOpen = !s.endsWith('\n');
      if (!stdout.write(s)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            stdout.removeListener('drain', done);
            stdout.removeListener('error', done);
            stdout.removeListener('close', done);
            resolve();
          };
          stdout.once('drain', done);
          stdout.once('error', done);
          stdout.once('close', done);
        });
      }
      if (shared && !lineOpen) draw();
    },
    note(line) {
      if (!enabled) return;
      erase();
      // A transcript line still open on the same terminal is ended first, so the note has its own line.
      if (shared && lineOpen) {
        stdout.write('\n');
        lineOpen = false;
      }
      stderr.write(line + '\n');
      draw();
    },
    status(text, force = false) {
      if (!enabled) return;
      wanted = text;
      if (force || Date.now() - lastDraw >= REDRAW_MS) draw();
    },
    done() {
      wanted = '';
      if (enabled) erase();
    },
  };
}

/** 1234567 -> "1.2 MB". */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v} ${units[i]}` : `${v.toFixed(1)} ${units[i]}`;
}

/** 75 -> "1:15", 3725 -> "1:02:05". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor(s / 60) % 60;
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function bar(frac: number, width = 24): string {
  const filled = Math.round(Math.min(1, Math.max(0, frac)) * width);
  return '█'.repeat(filled) + '░'.repeat(width - filled);
}

/** The download status line: file, bar, percent, bytes, speed, ETA. */
export function downloadLine(p: LoadProgress): string {
  const speed = p.bytesPerSecond > 0 ? ` ${formatBytes(p.bytesPerSecond)}/s` : '';
  const eta = p.etaSeconds !== undefined ? ` ETA ${formatDuration(p.etaSeconds)}` : '';
  if (p.total === undefined || p.total === 0) return `downloading ${p.file} ${formatBytes(p.received)}${speed}`;
  const frac = p.received / p.total;
  return `downloading ${p.file} ${bar(frac)} ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(p.received)}/${formatBytes(p.total)}${speed}${eta}`;
}

/**
 * The transcription status line: percent of the audio done (when its length is known), the phase, tokens,
 * elapsed time and an ETA from the rate so far.
 */
export function transcribeLine(name: string, p: TranscribeProgress): string {
  const total = p.totalSeconds;
  const elapsed = p.elapsedMs / 1000;
  const parts: string[] = [];
  if (total !== undefined && total > 0) {
    const frac = p.audioSeconds / total;
    parts.push(`${bar(frac, 16)} ${(frac * 100).toFixed(0).padStart(3)}% of ${formatDuration(total)}`);
  } else {
    parts.push(`${formatDuration(p.inputSeconds)} read`);
  }
  const seg = p.segmentStart !== undefined ? ` ${formatDuration(p.segmentStart)}-${formatDuration(p.segmentEnd ?? 0)}` : '';
  if (p.phase === 'encoding') parts.push(`encoding${seg}`);
  else if (p.phase === 'decoding') parts.push(`decoding${seg}, ${p.tokens} tokens`);
  else if (p.phase === 'reading') parts.push('reading');
  parts.push(`${formatDuration(elapsed)} elapsed`);
  if (total !== undefined && p.audioSeconds > 0 && p.audioSeconds < total) {
    parts.push(`ETA ${formatDuration((elapsed / p.audioSeconds) * (total - p.audioSeconds))}`);
  }
  return `${name}: ${parts.join(' · ')}`;
}
