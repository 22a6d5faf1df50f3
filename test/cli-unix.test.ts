// `rustasr` as a Unix tool: quiet exit on EPIPE, several files (headers, JSON lines, --output-dir, failures),
// validated numeric options (exit 2), ISO language codes, one line per segment, --quant, --raw, `rm`, and
// progress lines on a terminal only (a pseudo-terminal from `script`).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { decodeWav } from '../src/index.js';
import { BIN, type CliRun, ensureDist, runCli } from './helpers/cli.js';
import { goldenPath, REPO_ROOT } from './helpers/golden.js';

const MODEL = goldenPath('models', 'tiny-a');
const WAV = goldenPath('audio', 'en_5s.wav');
const WAV21 = goldenPath('audio', 'en_21s.wav');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-cli-unix-'));
const env = () => ({ ...process.env, RUSTASR_OFFLINE: '1', RUSTASR_CACHE_DIR: join(scratch, 'cache') });

beforeAll(() => ensureDist(join('cli', 'index.js')));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const run = (args: string[], stdinFile?: string): Promise<CliRun> => runCli(args, env(), stdinFile);
const infer = (...args: string[]) => run(['infer', ...args, '--model', MODEL]);

describe('EPIPE', () => {
  it('`rustasr infer ... | head -1` exits quietly (status 141, nothing on stderr)', async () => {
    const files = Array.from({ length: 12 }, () => WAV);
    const child = spawn(process.execPath, [BIN, 'infer', ...files, '--model', MODEL, '--max-new-tokens', '4'], {
      cwd: REPO_ROOT,
      env: env(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // The reader takes the first line and goes away, as head -1 does.
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    expect(stderr).toBe('');
    expect(code).toBe(141);
  });

  it('through a shell pipe to head: no stack trace', () => {
    const out = execFileSync('sh', ['-c', `node "${BIN}" infer "${WAV}" "${WAV}" "${WAV}" "${WAV}" --model "${MODEL}" --max-new-tokens 8 | head -1; echo done`], {
      cwd: REPO_ROOT,
      env: env(),
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(out.trim().split('\n')).toEqual([`==> ${WAV} <==`, 'done']);
  });
});

describe('several files', () => {
  it('text: a header per file; JSON: one object per line with its file; the same ids as one file alone', async () => {
    const one = JSON.parse((await infer(WAV, '--max-new-tokens', '5', '--format', 'json')).stdout) as { tokens: number[] };
    const t = await infer(WAV, WAV21, '--max-new-tokens', '5');
    expect(t.code).toBe(0);
    expect(t.stdout.startsWith(`==> ${WAV} <==\n`)).toBe(true);
    expect(t.stdout).toContain(`\n\n==> ${WAV21} <==\n`);
    const j = await infer(WAV, WAV21, '--max-new-tokens', '5', '--format', 'json');
    const lines = j.stdout.trim().split('\n').map((l) => JSON.parse(l) as { file: string; tokens: number[] });
    expect(lines.map((l) => l.file)).toEqual([WAV, WAV21]);
    expect(lines[0]!.tokens).toEqual(one.tokens);
  });

  it('a failing file is reported, the others still run, and the exit code is 1', async () => {
    const bad = join(scratch, 'not-audio.wav');
    writeFileSync(bad, 'hello');
    const r = await infer(WAV, bad, join(scratch, 'missing.wav'), WAV, '--max-new-tokens', '3', '--format', 'json');
    expect(r.code).toBe(1);
    expect(r.stdout.trim().split('\n')).toHaveLength(2);
    expect(r.stderr).toContain(`rustasr: ${bad}: UNSUPPORTED_AUDIO_FORMAT:`);
    expect(r.stderr).toContain(`rustasr: ${join(scratch, 'missing.wav')}: IO_ERROR:`);
  });

  it('--output-dir writes one file per input (unique names), nothing on stdout', async () => {
    const dir = join(scratch, 'out');
    const r = await infer(WAV, WAV, WAV21, '--max-new-tokens', '3', '--format', 'srt', '--output-dir', dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(readdirSync(dir).sort()).toEqual(['en_21s.srt', 'en_5s-2.srt', 'en_5s.srt']);
    expect(readFileSync(join(dir, 'en_5s.srt'), 'utf8')).toMatch(/^1\n00:00:00,000 --> 00:00:05,077\n/);
    const noDir = await infer(WAV, WAV21, '--format', 'srt');
    expect(noDir.code).toBe(2);
    expect(noDir.stderr).toContain('--format srt with several files needs --output-dir');
  });
});

describe('options', () => {
  it('numeric options out of range or negative: INVALID_OPTION, exit 2', async () => {
    const cases: [string[], RegExp][] = [
      [['--threads', '-1'], /--threads must be an integer from 0 to \d+/],
      [['--threads', '999'], new RegExp(`--threads must be an integer from 0 to ${availableParallelism()}`)],
      [['--max-new-tokens', '-3'], /--max-new-tokens must be an integer from 1 to 32768, got -3/],
      [['--max-new-tokens', '0'], /--max-new-tokens must be an integer from 1/],
      [['--max-new-tokens', '2.5'], /--max-new-tokens must be an integer/],
      [['--max-segment-seconds', '0'], /--max-segment-seconds must be a number from 1 to 1200/],
      [['--max-segment-seconds', '5000'], /--max-segment-seconds must be a number from 1 to 1200/],
      [['--device-index', '-2'], /--device-index must be an integer from 0/],
      [['--raw', '--rate', '-8000'], /--rate must be an integer from 1 to 384000/],
      [['--raw', '--rate', '8000', '--channels', '0'], /--channels must be an integer from 1 to 64/],
    ];
    for (const [flags, msg] of cases) {
      const r = await infer(WAV, ...flags);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr, flags.join(' ')).toMatch(/^rustasr: INVALID_OPTION: /);
      expect(r.stderr, flags.join(' ')).toMatch(msg);
    }
  });

  it('--language takes ISO 639-1/639-3 codes and names in any case; an unknown one exits 2 with the list', async () => {
    const ids = async (lang: string) => (JSON.parse((await infer(WAV, '--max-new-tokens', '4', '--format', 'json', '--language', lang)).stdout) as { tokens: number[]; language: string }).tokens;
    const want = await ids('English');
    for (const lang of ['en', 'EN', 'eng', 'english', 'en-US']) expect(await ids(lang), lang).toEqual(want);
    const bad = await infer(WAV, '--language', 'klingon');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--language "klingon" is not a supported language; .*Chinese, English, Cantonese/);
  });

  it('text output puts one newline between segments', async () => {
    const r = await infer(WAV21, '--max-new-tokens', '4', '--max-segment-seconds', '8', '--format', 'json');
    const segs = (JSON.parse(r.stdout) as { segments: { text: string }[] }).segments;
    expect(segs.length).toBeGreaterThan(1);
    const t = await infer(WAV21, '--max-new-tokens', '4', '--max-segment-seconds', '8');
    expect(t.stdout.split('\n')).toHaveLength(segs.length + 1); // n lines, each ended by a newline
  });

  it('--quant int8 (flag and --config) runs', async () => {
    const r = await infer(WAV, '--max-new-tokens', '4', '--format', 'json', '--quant', 'int8');
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toHaveLength(4);
    const cfg = join(scratch, 'q.json');
    writeFileSync(cfg, JSON.stringify({ quant: 'int8', maxNewTokens: 4, format: 'json' }));
    const c = await infer(WAV, '--config', cfg);
    expect((JSON.parse(c.stdout) as { tokens: number[] }).tokens).toEqual((JSON.parse(r.stdout) as { tokens: number[] }).tokens);
    expect((await infer(WAV, '--quant', 'int3')).code).toBe(2);
  });

  it('--raw reads headerless PCM from stdin: the same ids as the WAV', async () => {
    const wav = await infer(WAV, '--max-new-tokens', '5', '--format', 'json');
    const pcm = join(scratch, 'a.s16le');
    const bytes = readFileSync(WAV);
    const dataAt = bytes.indexOf('data') + 8;
    writeFileSync(pcm, bytes.subarray(dataAt, dataAt + decodeWav(bytes).info.frames * 2));
    const r = await run(['infer', '-', '--raw', '--rate', '16000', '--model', MODEL, '--max-new-tokens', '5', '--format', 'json'], pcm);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual((JSON.parse(wav.stdout) as { tokens: number[] }).tokens);
    expect((await run(['infer', '-', '--rate', '16000', '--model', MODEL], pcm)).code).toBe(2);
  });
});

describe('rustasr rm and list', () => {
  it('an incomplete download is listed as such; rm removes one id, rm --all the rest', async () => {
    const cache = join(scratch, 'rm-cache');
    for (const [repo, rev] of [
      ['Qwen--Qwen3-ASR-0.6B', 'main'],
      ['Qwen--Qwen3-ASR-1.7B', 'main'],
    ]) {
      mkdirSync(join(cache, 'models', repo!, rev!), { recursive: true });
      writeFileSync(join(cache, 'models', repo!, rev!, 'config.json.partial'), '{');
    }
    const e = { ...env(), RUSTASR_CACHE_DIR: cache };
    const list = await runCli(['list'], e);
    expect(list.stdout).toMatch(/Qwen\/Qwen3-ASR-0\.6B\s+main\s+1 B\s+incomplete/);
    expect(list.stdout).toContain('`rustasr rm ID` removes it');
    const rm = await runCli(['rm', 'Qwen/Qwen3-ASR-0.6B'], e);
    expect(rm.code).toBe(0);
    expect(rm.stdout).toMatch(/^removed Qwen\/Qwen3-ASR-0\.6B main \(1 B, incomplete\)/);
    expect(existsSync(join(cache, 'models', 'Qwen--Qwen3-ASR-0.6B'))).toBe(false);
    const again = await runCli(['rm', 'Qwen/Qwen3-ASR-0.6B'], e);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('MODEL_NOT_FOUND');
    expect((await runCli(['rm'], e)).code).toBe(2);
    expect((await runCli(['rm', '--all'], e)).code).toBe(0);
    expect((await runCli(['list'], e)).stdout).toBe('no cached models\n');
  });

  it('rm leaves a revision alone while another process downloads it (its lock is held)', async () => {
    const cache = join(scratch, 'rm-locked');
    const dir = join(cache, 'models', 'o--n', 'main');
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}.lock`, JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), since: new Date().toISOString() }));
    const r = await runCli(['rm', 'o/n'], { ...env(), RUSTASR_CACHE_DIR: cache });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('is being downloaded by another process');
    expect(existsSync(dir)).toBe(true);
  });
});

describe('progress on a terminal', () => {
  /** Runs the CLI under a pseudo-terminal (stdout and stderr both the TTY); returns what the terminal got. */
  function onTty(args: string[]): string {
    const cmd = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    return execFileSync('script', ['-qec', cmd, '/dev/null'], { cwd: REPO_ROOT, env: { ...env(), COLUMNS: '200' }, encoding: 'utf8' });
  }

  it('a status line that is erased, transcript lines that stay clean; --quiet shows none', () => {
    const shown = onTty(['infer', WAV21, '--model', MODEL, '--max-new-tokens', '4', '--max-segment-seconds', '8']);
    expect(shown).toContain('\x1b[K'); // a status line was drawn and erased
    expect(shown).toMatch(/en_21s\.wav: .*(encoding|decoding)/);
    expect(shown).toMatch(/\[segment 0: 0\.00-/);
    // Every transcript line (not a status or note line) is whole: no status text inside it.
    const lines = shown.split('\r\x1b[K').join('\n').split(/\r?\n/).filter((l) => l !== '' && !l.includes('\x1b'));
    for (const l of lines) expect(l.includes('elapsed') && !l.startsWith(WAV21)).toBe(false);
    const quiet = onTty(['infer', WAV21, '--model', MODEL, '--max-new-tokens', '4', '--max-segment-seconds', '8', '--quiet']);
    expect(quiet).not.toContain('\x1b[K');
    expect(quiet).not.toContain('[segment');
  });
});
