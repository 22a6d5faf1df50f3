// Progress: loadModel({ onProgress }) while a hub model downloads (bytes, speed, ETA), transcribe({ onProgress })
// as audio is processed, and the terminal status line of the CLI (TTY only, never mixed with the transcript).
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { downloadMeter, type LoadProgress } from '../src/hub/progress.js';
import { downloadLine, terminal, transcribeLine } from '../src/cli/progress.js';
import { decodeWav, loadModel, transcribe, type Model, type TranscribeProgress } from '../src/index.js';
import { startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { goldenPath } from './helpers/golden.js';

const WAV = goldenPath('audio', 'en_5s.wav');
let model: Model;
let hub: FakeHub;
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-progress-'));

beforeAll(async () => {
  model = await loadModel(goldenPath('models', 'tiny-a'), { threads: 2 });
  hub = await startFakeHub();
  const files: Record<string, Buffer> = {};
  for (const f of readdirSync(goldenPath('models', 'tiny-a'))) files[f] = readFileSync(goldenPath('models', 'tiny-a', f));
  hub.addRepo('test/tiny-a', files);
});
afterAll(async () => {
  model?.dispose();
  await hub?.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('loadModel({ onProgress })', () => {
  it('reports each file of a hub download with its bytes, speed and ETA, and loads', async () => {
    const saved = { endpoint: process.env.HF_ENDPOINT, cache: process.env.RUSTASR_CACHE_DIR, offline: process.env.RUSTASR_OFFLINE };
    process.env.HF_ENDPOINT = hub.endpoint;
    process.env.RUSTASR_CACHE_DIR = join(scratch, 'cache');
    delete process.env.RUSTASR_OFFLINE;
    const seen: LoadProgress[] = [];
    try {
      const m = await loadModel('test/tiny-a', { threads: 1, onProgress: (p) => seen.push(p) });
      m.dispose();
    } finally {
      for (const [k, v] of [['HF_ENDPOINT', saved.endpoint], ['RUSTASR_CACHE_DIR', saved.cache], ['RUSTASR_OFFLINE', saved.offline]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    const weights = seen.filter((p) => p.file === 'model.safetensors');
    expect(weights.length).toBeGreaterThan(0);
    const last = weights.at(-1)!;
    expect(last.received).toBe(last.total);
    for (const p of seen) {
      expect(p.bytesPerSecond).toBeGreaterThanOrEqual(0);
      if (p.etaSeconds !== undefined) expect(p.etaSeconds).toBeGreaterThanOrEqual(0);
    }
    // A second load from the complete cache downloads nothing.
    const again: LoadProgress[] = [];
    process.env.RUSTASR_CACHE_DIR = join(scratch, 'cache');
    process.env.HF_ENDPOINT = hub.endpoint;
    try {
      (await loadModel('test/tiny-a', { threads: 1, onProgress: (p) => again.push(p) })).dispose();
    } finally {
      delete process.env.RUSTASR_CACHE_DIR;
      if (saved.endpoint === undefined) delete process.env.HF_ENDPOINT;
      else process.env.HF_ENDPOINT = saved.endpoint;
    }
    expect(again).toEqual([]);
  });

  it('downloadMeter: speed over the recent window, ETA from it', () => {
    let t = 0;
    const out: LoadProgress[] = [];
    const meter = downloadMeter((p) => out.push(p), () => t);
    meter({ file: 'a', received: 0, total: 4000 });
    t = 1000;
    meter({ file: 'a', received: 1000, total: 4000 });
    t = 2000;
    meter({ file: 'a', received: 2000, total: 4000 });
    expect(out.map((p) => p.bytesPerSecond)).toEqual([0, 1000, 1000]);
    expect(out[2]!.etaSeconds).toBe(2);
    meter({ file: 'b', received: 10, total: undefined });
    expect(out[3]).toEqual({ file: 'b', received: 10, total: undefined, bytesPerSecond: 0, etaSeconds: undefined });
    expect(downloadLine({ ...out[2]!, file: 'model.safetensors' })).toMatch(/^downloading model\.safetensors .* 50% 2\.0 kB\/4\.0 kB 1\.0 kB\/s ETA 0:02$/);
  });
});

describe('transcribe({ onProgress })', () => {
  it('goes reading -> encoding -> decoding -> done per segment; audio seconds reach the total', async () => {
    const long = goldenPath('audio', 'en_21s.wav');
    const seconds = decodeWav(readFileSync(long)).info.frames / 16000;
    const seen: TranscribeProgress[] = [];
    const r = await transcribe(long, { model, maxNewTokens: 6, maxSegmentSeconds: 8, onProgress: (p) => seen.push({ ...p }) });
    expect(r.segments.length).toBeGreaterThan(1);
    const phases = seen.map((p) => p.phase).filter((p, i, a) => p !== a[i - 1]);
    expect(phases.slice(0, 2)).toEqual(['reading', 'encoding']);
    expect(phases.at(-1)).toBe('done');
    expect(phases.filter((p) => p === 'encoding').length).toBe(r.segments.length);
    const done = seen.at(-1)!;
    expect(done.totalSeconds).toBeCloseTo(seconds, 6);
    expect(done.audioSeconds).toBeCloseTo(seconds, 6);
    expect(done.tokens).toBe(r.tokens.length);
    // audio seconds never go back
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.audioSeconds).toBeGreaterThanOrEqual(seen[i - 1]!.audioSeconds);
    expect(transcribeLine('a.wav', { ...done, totalSeconds: 10, phase: 'decoding', audioSeconds: 5, elapsedMs: 4000 })).toMatch(/^a\.wav: .* 50% of 0:10 · decoding .* · 0:04 elapsed · ETA 0:04$/);
  });

  it('a throwing onProgress fails the transcription with its error', async () => {
    await expect(
      transcribe(WAV, {
        model,
        maxNewTokens: 2,
        onProgress: () => {
          throw new Error('boom');
        },
      }),
    ).rejects.toThrow('boom');
  });
});

/** A fake terminal stream recording what is written. */
function fakeTty(isTTY: boolean): NodeJS.WritableStream & { isTTY: boolean; columns: number; text: string } {
  const s = {
    isTTY,
    columns: 80,
    text: '',
    write(chunk: string) {
      s.text += chunk;
      return true;
    },
  };
  return s as unknown as NodeJS.WritableStream & { isTTY: boolean; columns: number; text: string };
}

describe('terminal status line', () => {
  it('stdout and stderr on one terminal: the status is erased before transcript text and not drawn over an open line', async () => {
    const out = fakeTty(true);
    const err = fakeTty(true);
    const term = terminal(out, err, { quiet: false });
    term.status('encoding', true);
    expect(err.text).toBe('\rencoding\x1b[K');
    await term.out('hello');
    expect(err.text).toBe('\rencoding\x1b[K\r\x1b[K');
    term.status('decoding', true); // a transcript line is open: not drawn
    expect(err.text).toBe('\rencoding\x1b[K\r\x1b[K');
    term.note('[segment 0]'); // ends the transcript line first, on its own line
    expect(out.text).toBe('hello\n');
    expect(err.text.endsWith('[segment 0]\n\rdecoding\x1b[K')).toBe(true);
    term.done();
    expect(err.text.endsWith('\r\x1b[K')).toBe(true);
  });

  it('nothing on stderr when it is not a TTY, or with quiet', async () => {
    for (const [tty, quiet] of [
      [false, false],
      [true, true],
    ] as const) {
      const out = fakeTty(false);
      const err = fakeTty(tty);
      const term = terminal(out, err, { quiet });
      term.status('x', true);
      term.note('y');
      await term.out('text\n');
      term.done();
      expect(err.text).toBe('');
      expect(out.text).toBe('text\n');
      expect(term.enabled).toBe(false);
    }
  });
});
