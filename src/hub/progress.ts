// Download progress with speed and ETA, for loadModel({ onProgress }) and the CLI's download bar.
import type { DownloadProgress } from './resolve.js';

/** A download's progress, as loadModel() reports it: bytes of the current file, its speed and ETA. */
export interface LoadProgress extends DownloadProgress {
  /** Average speed over the last few seconds, in bytes per second (0 until two reports). */
  bytesPerSecond: number;
  /** Seconds left for this file at that speed, when its size is known and the speed is not 0. */
  etaSeconds: number | undefined;
}

/** Window of the speed average. */
const WINDOW_MS = 3000;

/** Turns per-file DownloadProgress reports into LoadProgress (speed, ETA). */
export function downloadMeter(onProgress: (p: LoadProgress) => void, now: () => number = () => performance.now()): (p: DownloadProgress) => void {
  let file = '';
  let samples: { t: number; bytes: number }[] = [];
  return (p) => {
    const t = now();
    if (p.file !== file) {
      file = p.file;
      samples = [];
    }
    samples.push({ t, bytes: p.received });
    while (samples.length > 2 && t - samples[0]!.t > WINDOW_MS) samples.shift();
    const first = samples[0]!;
    const dt = (t - first.t) / 1000;
    const bytesPerSecond = dt > 0 ? Math.max(0, (p.received - first.bytes) / dt) : 0;
    const etaSeconds = p.total !== undefined && bytesPerSecond > 0 ? Math.max(0, (p.total - p.received) / bytesPerSecond) : undefined;
    onProgress({ file: p.file, received: p.received, total: p.total, bytesPerSecond, etaSeconds });
  };
}
