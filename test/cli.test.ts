// `rustasr infer` as a subprocess (node bin/rustasr.js): formats, stdin, --config, exit codes.
// bin/rustasr.js runs dist/: CI builds it (`npm run build`) before `npm test`; locally, a dist/ older than
// src/ is rebuilt once here (tsc -p tsconfig.build.json).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { formatCue } from '../src/cli/index.js';
import { alignerLanguageMessage } from '../src/cli/infer.js';
import { decodeWav } from '../src/index.js';
import { buildPrompt } from '../src/text/prompt.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { type CliRun, ensureDist, runCli } from './helpers/cli.js';
import { goldenPath, loadCase } from './helpers/golden.js';
import { makeLoopingModel } from './helpers/looping-model.js';
import { wavFromSamples } from '../scripts/wav-builder.mjs';

const MODEL = goldenPath('models', 'tiny-a');
const ALIGNER = goldenPath('models', 'tiny-fa');
const WAV = goldenPath('audio', 'en_5s.wav');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-cli-'));
let goldenIds: number[] = [];
/** A model that reads this paragraph over and over (a synthetic transcript with sentences and clauses). */
const PARAGRAPH =
  'Subtitles should be easy to read. Each cue holds at most two lines, and every line stays short! Pauses; sentences or long stretches of speech decide where cues end?';
let reader = '';
/** A model that says "Hello, I think" and then " I think" for ever. */
let looper = '';

beforeAll(async () => {
  ensureDist(join('cli', 'index.js'));
  goldenIds = (await loadCase('tiny-a__en_5s')).json.greedy.generated_ids.slice(0, 16);
  const tok = await loadTokenizer(MODEL);
  const chain = tok.encode(PARAGRAPH);
  expect(new Set(chain).size).toBe(chain.length); // every token once: one basis vector each
  const last = buildPrompt(tok, { audioTokens: 1 }).ids.at(-1)!;
  reader = makeLoopingModel(MODEL, last, chain, 0);
  looper = makeLoopingModel(MODEL, last, tok.encode('Hello, I think'), 2);
}, 60_000);
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
  for (const d of [reader, looper]) if (d) rmSync(d, { recursive: true, force: true });
});

interface ParsedCue {
  n: number | undefined;
  start: number;
  end: number;
  lines: string[];
}

/** Parses SRT or WebVTT output into cues (times in seconds). */
function parseCues(out: string, format: 'srt' | 'vtt'): ParsedCue[] {
  const body = format === 'vtt' ? out.replace(/^WEBVTT\n\n/, '') : out;
  const secs = (t: string) => {
    const [h, m, s] = t.replace(',', '.').split(':').map(Number) as [number, number, number];
    return h * 3600 + m * 60 + s;
  };
  return body
    .trim()
    .split('\n\n')
    .map((block) => {
      const rows = block.split('\n');
      const n = format === 'srt' ? Number(rows.shift()) : undefined;
      const m = /^(\d\d:\d\d:\d\d[.,]\d{3}) --> (\d\d:\d\d:\d\d[.,]\d{3})$/.exec(rows.shift()!);
      expect(m, block).not.toBeNull();
      return { n, start: secs(m![1]!), end: secs(m![2]!), lines: rows };
    });
}

/** The rules every cue keeps whatever the times: numbering, order, 2 lines of 42, 7 s. */
function checkCueRules(cues: ParsedCue[], format: 'srt' | 'vtt', maxSeconds: number) {
  cues.forEach((c, i) => {
    if (format === 'srt') expect(c.n).toBe(i + 1);
    expect(c.end).toBeGreaterThanOrEqual(c.start);
    expect(c.end - c.start).toBeLessThanOrEqual(maxSeconds + 0.0015);
    if (i > 0) expect(c.start).toBeGreaterThanOrEqual(cues[i - 1]!.end - 0.0015);
    expect(c.lines.length).toBeGreaterThanOrEqual(1);
    expect(c.lines.length).toBeLessThanOrEqual(2);
    for (const l of c.lines) expect(Array.from(l.replace(/<[^>]*>/g, '')).length).toBeLessThanOrEqual(42);
  });
}

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

  it('--format json --timestamps word: words of every segment, in order, with times', async () => {
    const r = await run(['infer', WAV, '-m', reader, '--timestamps', 'word', '--aligner', ALIGNER, '--max-new-tokens', '80', '--format', 'json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const j = JSON.parse(r.stdout) as { text: string; words: { text: string; start: number; end: number }[]; segments: { words: unknown[] }[] };
    expect(j.text.startsWith(PARAGRAPH)).toBe(true);
    expect(j.words).toEqual(j.segments.flatMap((s) => s.words));
    expect(j.words.slice(0, 6).map((w) => w.text)).toEqual(['Subtitles', 'should', 'be', 'easy', 'to', 'read']);
    for (let i = 0; i < j.words.length; i++) {
      expect(j.words[i]!.end).toBeGreaterThanOrEqual(j.words[i]!.start);
      if (i > 0) expect(j.words[i]!.start).toBeGreaterThanOrEqual(j.words[i - 1]!.start);
    }
  });

  it.each(['srt', 'vtt'] as const)('--format %s --timestamps word: cues by the subtitle rules, the whole transcript once', async (format) => {
    const r = await run(['infer', WAV, '-m', reader, '--timestamps', 'word', '--aligner', ALIGNER, '--max-new-tokens', '80', '--format', format]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    if (format === 'vtt') expect(r.stdout.startsWith('WEBVTT\n\n')).toBe(true);
    const cues = parseCues(r.stdout, format);
    checkCueRules(cues, format, 7);
    const text = cues.map((c) => c.lines.join(' ')).join(' ');
    expect(text.startsWith(PARAGRAPH)).toBe(true);
    // A sentence end closes its cue.
    for (const c of cues) expect(c.lines.join(' ').slice(0, -1)).not.toMatch(/[.!?] /);
  });

  it('--format vtt --karaoke: each cue word after the first carries its time', async () => {
    const r = await run(['infer', WAV, '-m', reader, '--aligner', ALIGNER, '--max-new-tokens', '40', '--format', 'vtt', '--karaoke']);
    expect(r.code).toBe(0);
    const cues = parseCues(r.stdout, 'vtt');
    expect(cues[0]!.lines.join(' ')).toMatch(/^Subtitles <\d\d:\d\d:\d\d\.\d{3}>should /);
  });

  it('srt without an aligner: says how to get one, cues follow pauses (at most 30 s)', async () => {
    const r = await run(['infer', goldenPath('audio', 'en_21s.wav'), '-m', reader, '--max-new-tokens', '120', '--format', 'srt']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('rustasr pull Qwen/Qwen3-ForcedAligner-0.6B');
    const cues = parseCues(r.stdout, 'srt');
    checkCueRules(cues, 'srt', 30);
    expect(cues.length).toBeGreaterThan(3);
    expect(cues[cues.length - 1]!.end).toBeCloseTo(21.103, 2);
  });

  it('srt with a forced language the aligner does not take: says so, cues follow pauses; --timestamps word keeps the error', async () => {
    const asr = (JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')) as { support_languages: string[] }).support_languages;
    const fa = (JSON.parse(readFileSync(join(ALIGNER, 'config.json'), 'utf8')) as { support_languages: string[] }).support_languages;
    const language = asr.find((l) => !fa.includes(l));
    expect(language).toBeDefined();
    const r = await run(['infer', WAV, '-m', reader, '--aligner', ALIGNER, '--language', language!, '--max-new-tokens', '40', '--format', 'srt']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(alignerLanguageMessage(language!));
    const cues = parseCues(r.stdout, 'srt');
    checkCueRules(cues, 'srt', 30);
    expect(cues.length).toBeGreaterThan(0);
    // The same language the aligner does take: word-timed cues, nothing on stderr.
    const ok = await run(['infer', WAV, '-m', reader, '--aligner', ALIGNER, '--language', fa[0]!, '--max-new-tokens', '40', '--format', 'srt']);
    expect([ok.code, ok.stderr]).toEqual([0, '']);
    const explicit = await run(['infer', WAV, '-m', reader, '--aligner', ALIGNER, '--language', language!, '--timestamps', 'word', '--format', 'srt']);
    expect(explicit.code).not.toBe(0);
    expect(explicit.stderr).toContain('UNSUPPORTED_LANGUAGE');
  });

  it('--timestamps word without an aligner (json) exits 1 with MODEL_NOT_FOUND and the pull command', async () => {
    const r = await run(['infer', WAV, '-m', MODEL, '--timestamps', 'word', '--format', 'json']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('MODEL_NOT_FOUND');
    expect(r.stderr).toContain('rustasr pull Qwen/Qwen3-ForcedAligner-0.6B');
  });

  it('text output is the cleaned transcript: a runaway "I think I think ..." is printed once', async () => {
    const r = await run(['infer', WAV, '-m', looper, '--max-new-tokens', '300']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('Hello, I think\n');
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
