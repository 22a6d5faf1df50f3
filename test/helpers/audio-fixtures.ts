// Audio fixtures made at test time from the golden PCM references with Debian's encoders (lame, flac,
// vorbis-tools, opus-tools, ffmpeg; `.ci/run` installs them). The decoders under test never need these tools:
// they only make the files, and give reference decodes of the lossy ones.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ENCODERS = ['lame', 'flac', 'oggenc', 'opusenc', 'opusdec', 'ffmpeg'] as const;

/** Fails with what to install when an encoder is missing (never skips: CI has them). */
export function requireEncoders(): void {
  for (const tool of ENCODERS) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${tool} is needed to make the audio fixtures: apt-get install lame flac vorbis-tools opus-tools ffmpeg (.ci/run does)`);
    }
  }
}

export function run(tool: string, args: string[]): Buffer {
  return execFileSync(tool, args, { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** ffmpeg with quiet logging. */
export function ffmpeg(...args: string[]): Buffer {
  return run('ffmpeg', ['-nostdin', '-v', 'error', '-y', ...args]);
}

/** A decode by ffmpeg: interleaved float32 at the file's rate (`decoder` forces an ffmpeg decoder, e.g. libopus). */
export function ffmpegDecode(file: string, opts: { decoder?: string } = {}): { samples: Float32Array; channels: number; rate: number } {
  const probe = run('ffprobe', ['-v', 'error', '-select_streams', 'a:0', '-show_entries', 'stream=sample_rate,channels', '-of', 'csv=p=0', file])
    .toString()
    .trim()
    .split(',');
  const rate = Number(probe[0]);
  const channels = Number(probe[1]);
  const pre = opts.decoder ? ['-c:a', opts.decoder] : [];
  const out = ffmpeg(...pre, '-i', file, '-f', 'f32le', '-c:a', 'pcm_f32le', '-');
  return { samples: new Float32Array(out.buffer, out.byteOffset, out.length / 4), channels, rate };
}

/** De-interleaves float samples. */
export function planar(x: Float32Array, channels: number): Float32Array[] {
  const n = Math.floor(x.length / channels);
  return Array.from({ length: channels }, (_, c) => Float32Array.from({ length: n }, (_, i) => x[i * channels + c]!));
}

/**
 * The SNR of `x` against the reference `ref` in dB, at the lag in [-maxLag, maxLag] that maximises it (decoders
 * may differ in how much encoder delay they trim), over the overlap less `margin` samples at each end.
 */
export function alignedSnr(x: Float32Array, ref: Float32Array, maxLag = 2048, margin = 2048): { snr: number; lag: number } {
  let best = { snr: -Infinity, lag: 0 };
  const n = Math.min(x.length, ref.length);
  for (let lag = -maxLag; lag <= maxLag; lag++) {
    let s = 0;
    let e = 0;
    for (let i = margin; i < n - margin; i++) {
      const a = x[i + lag];
      if (a === undefined) continue;
      const r = ref[i]!;
      s += r * r;
      e += (a - r) * (a - r);
    }
    const snr = e === 0 ? Infinity : 10 * Math.log10(s / e);
    if (snr > best.snr) best = { snr, lag };
  }
  return best;
}

export interface Fixtures {
  dir: string;
  /** Path of a fixture file. */
  path(name: string): string;
  bytes(name: string): Buffer;
  cleanup(): void;
}

/**
 * Makes every fixture from `mono` (16 kHz mono 16-bit WAV) and `stereo` (44.1 kHz stereo 16-bit WAV) in a fresh
 * temporary folder.
 */
export function makeFixtures(mono: string, stereo: string): Fixtures {
  requireEncoders();
  const dir = mkdtempSync(join(tmpdir(), 'rustasr-formats-'));
  const p = (name: string) => join(dir, name);
  // Lossless and G.711.
  run('flac', ['-s', '-f', '-o', p('mono.flac'), mono]);
  run('flac', ['-s', '-f', '-o', p('stereo.flac'), stereo]);
  run('flac', ['-s', '-f', '--ogg', '-o', p('mono.oga'), mono]);
  ffmpeg('-i', mono, '-rf64', 'always', '-c:a', 'pcm_s16le', p('mono.rf64.wav'));
  ffmpeg('-i', mono, '-ar', '8000', '-c:a', 'pcm_mulaw', p('ulaw_8k.wav'));
  ffmpeg('-i', stereo, '-ar', '8000', '-c:a', 'pcm_alaw', p('alaw_8k_stereo.wav'));
  for (const fmt of ['s16le', 's24le', 's32le', 'f32le', 'u8', 'mulaw', 'alaw']) ffmpeg('-i', stereo, '-f', fmt, p(`stereo.${fmt}`));
  // Lossy.
  run('lame', ['--quiet', '-b', '64', mono, p('mono.mp3')]);
  run('lame', ['--quiet', '-b', '128', stereo, p('stereo.mp3')]);
  run('oggenc', ['-Q', '-o', p('mono.ogg'), mono]);
  run('opusenc', ['--quiet', mono, p('mono.opus')]);
  run('opusenc', ['--quiet', stereo, p('stereo.opus')]);
  ffmpeg('-i', mono, '-c:a', 'libopus', p('mono.webm'));
  // As MediaRecorder writes it: Segment and Clusters of unknown size.
  ffmpeg('-i', mono, '-c:a', 'libopus', '-f', 'webm', '-live', '1', '-cluster_time_limit', '500', p('live.webm'));
  ffmpeg('-i', stereo, '-c:a', 'libvorbis', p('stereo_vorbis.webm'));
  ffmpeg('-i', mono, '-c:a', 'aac', p('mono.m4a'));
  ffmpeg('-i', mono, '-c:a', 'adpcm_ima_wav', p('ima_adpcm.wav'));
  ffmpeg('-i', stereo, '-c:a', 'adpcm_ima_wav', p('ima_adpcm_stereo.wav'));
  // Unsupported WAV codecs.
  ffmpeg('-i', mono, '-ar', '8000', '-c:a', 'libgsm_ms', p('gsm.wav'));
  ffmpeg('-i', mono, '-c:a', 'adpcm_ms', p('ms_adpcm.wav'));
  ffmpeg('-i', mono, '-c:a', 'libmp3lame', '-f', 'wav', p('mp3_in.wav'));
  return {
    dir,
    path: p,
    bytes: (name) => readFileSync(p(name)),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
