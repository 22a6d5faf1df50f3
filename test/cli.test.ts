// `rustasr infer` as a subprocess (node bin/rustasr.js): formats, stdin, --config, exit codes.
// bin/rustasr.js runs dist/: CI builds it (`npm run build`) before `npm test`; locally, a dist/ older than
// src/ is rebuilt once here (tsc -p tsconfig.build.json).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { formatCue } from '../src/cli/index.js';
import { decodeWav } from '../src/index.js';
import { type CliRun, ensureDist, runCli } from './helpers/cli.js';
import { goldenPath, loadCase } from './helpers/golden.js';
import { wavFromSamples } from '../scripts/wav-builder.mjs';

const MODEL = goldenPath('models', 'tiny-a');
const WAV = goldenPath('audio', 'en_5s.wav');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-cli-'));
let goldenIds: number[] = [];

beforeAll(() => {
  ensureDist(join('cli', 'index.js'));
  return loadCase('tiny-a__en_5s').then((c) => void (goldenIds = c.json.greedy.generated_ids.slice(0, 16)));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(args: string[], stdinFile?: string): Promise<CliRun> {
  // Offline with an empty cache: a CLI test never reaches the network.
  return runCli(args, { ...process.env, RUSTASR_OFFLINE: '1', RUSTASR_CACHE_DIR: join(scratch, 'cache') }, stdinFile);
}

describe('rustasr infer', () => {
  it('--format json prints the golden ids; nothing on a non-TTY stderr', async () => {
    const r = await run(['infer', WAV, '--model', MODEL, '--max-new-tokens', '16', '--format', 'json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { tokens: number[]; text: string; language: string | null; segments: unknown[] };
    expect(j.tokens).toEqual(goldenIds);
    expect(j.language).toBeNull();
    expect(j.segments).toHaveLength(1);
  });

  it('text from stdin (-) with --config; flags override the config', async () => {
    const cfg = join(scratch, 'cfg.json');
    writeFileSync(cfg, JSON.stringify({ model: MODEL, maxNewTokens: 3, format: 'json', threads: 1 }));
    const r = await run(['infer', '-', '--config', cfg, '--max-new-tokens', '16', '--format', 'text'], WAV);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('有不少_as_as_as_as_as_as_as\n');
  });

  it('--format srt: one cue per segment with the segment times', async () => {
    const x = decodeWav(readFileSync(WAV)).samples;
    const gapped = new Float32Array(x.length + 4800);
    gapped.set(x.subarray(0, 40_000));
    gapped.set(x.subarray(40_000), 44_800);
    for (let i = 0; i < gapped.length; i++) if (i < 40_000 || i >= 44_800) gapped[i]! += i % 2 ? 1e-4 : -1e-4;
    const file = join(scratch, 'gapped.wav');
    writeFileSync(file, wavFromSamples(gapped));
    const cfg = join(scratch, 'srt.json');
    writeFileSync(cfg, JSON.stringify({ 'max-segment-seconds': 3, format: 'srt' }));
    const r = await run(['infer', file, '-m', MODEL, '--config', cfg, '--max-new-tokens', '3']);
    expect(r.code).toBe(0);
    const cues = r.stdout.trim().split('\n\n');
    expect(cues).toHaveLength(2);
    // The cut lies inside the silent gap (2.5 s to 2.8 s), at its latest quietest point.
    expect(cues[0]).toMatch(/^1\n00:00:00,000 --> 00:00:02,([5-7]\d\d|800)\n.+$/);
    expect(cues[1]).toMatch(/^2\n00:00:02,([5-7]\d\d|800) --> 00:00:05,377\n.+$/);
  });

  it('vtt / srt cue formatting', () => {
    expect(formatCue('vtt', 1, { start: 62.5, end: 3725.0456, text: 'hi' })).toBe('00:01:02.500 --> 01:02:05.046\nhi\n\n');
    expect(formatCue('srt', 7, { start: 0, end: 1.2, text: 'a' })).toBe('7\n00:00:00,000 --> 00:00:01,200\na\n\n');
  });

  it.each([
    ['an unknown flag', ['infer', WAV, '--model', MODEL, '--bogus']],
    ['an unknown --config key', ['infer', WAV, '--config', 'CFG_BAD']],
    ['a bad --format', ['infer', WAV, '--model', MODEL, '--format', 'xml']],
    ['a bad --device', ['infer', WAV, '--model', MODEL, '--device', 'tpu']],
    ['a missing file argument', ['infer', '--model', MODEL]],
  ])('%s exits 2', async (_name, args) => {
    const bad = join(scratch, 'bad.json');
    writeFileSync(bad, JSON.stringify({ model: MODEL, colour: 'blue' }));
    const r = await run(args.map((a) => (a === 'CFG_BAD' ? bad : a)));
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).not.toBe('');
  });

  it.each([
    ['a missing model', [WAV, '--model', join(scratch, 'nope')], 'MODEL_NOT_FOUND'],
    ['the default hub model, offline with an empty cache', [WAV], 'MODEL_NOT_FOUND'],
    ['a hub id, offline with an empty cache', [WAV, '--model', 'Qwen/Qwen3-ASR-1.7B'], 'MODEL_NOT_FOUND'],
    ['--device cuda', [WAV, '--model', MODEL, '--device', 'cuda'], 'UNSUPPORTED_DEVICE'],
  ])('%s exits 1 with its code', async (_name, args, code) => {
    const r = await run(['infer', ...args]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(code);
  });

  it('list --json on an empty cache prints []', async () => {
    const r = await run(['list', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
  });
});
