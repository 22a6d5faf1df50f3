// Every example runs as its header documents it (`node examples/<name> <audio> <model>`), against the built
// package (dist/, resolved through the package's own name), with the tiny golden model.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseAsrOutput } from '../src/text/prompt.js';
import { ensureDist } from './helpers/cli.js';
import { goldenPath, REPO_ROOT } from './helpers/golden.js';

const run = promisify(execFile);
const MODEL = goldenPath('models', 'tiny-a');
const WAV = goldenPath('audio', 'en_5s.wav');
const folder = mkdtempSync(join(tmpdir(), 'rustasr-examples-'));
// The tiny random model's greedy transcript of en_5s.wav begins so (test/cli.test.ts checks the same ids).
const START = '有不少_as_as';

beforeAll(() => {
  ensureDist('index.js');
  copyFileSync(WAV, join(folder, 'a.wav'));
  copyFileSync(goldenPath('audio', 'en_1p2s.wav'), join(folder, 'b.wav'));
});
afterAll(() => rmSync(folder, { recursive: true, force: true }));

async function example(name: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [join(REPO_ROOT, 'examples', name), ...args], { cwd: REPO_ROOT, maxBuffer: 1 << 22, env: { ...process.env, RUSTASR_OFFLINE: '1' } });
}

describe('examples', () => {
  it('the examples folder holds only the examples tested here', () => {
    // deploy/: the server's docker-compose and Kubernetes files, checked by test/deploy-examples.test.ts.
    expect(readdirSync(join(REPO_ROOT, 'examples')).sort()).toEqual(['deploy', 'folder.mjs', 'for-await.mjs', 'pipe.mjs', 'require.cjs', 'rx.mjs', 'worker.mjs']);
  });

  it('pipe.mjs and for-await.mjs stream the same tokens; worker.mjs and require.cjs print their cleaned transcript', async () => {
    const outs = await Promise.all([
      example('pipe.mjs', WAV, MODEL),
      example('for-await.mjs', WAV, MODEL),
      example('worker.mjs', WAV, MODEL),
      example('require.cjs', WAV, MODEL),
    ]);
    for (const o of outs) expect(o.stdout.startsWith(START)).toBe(true);
    // Streamed tokens are the raw answer; transcribe()'s text is its official parse (repetitions collapsed).
    expect(outs[1]!.stdout.trim()).toBe(outs[0]!.stdout.trim());
    expect(outs[3]!.stdout.trim()).toBe(outs[2]!.stdout.trim());
    expect(outs[2]!.stdout.trim()).toBe(parseAsrOutput(outs[0]!.stdout).text);
    expect(outs[0]!.stderr).toContain('[wav/pcm, 16000 Hz, 1 channel(s)]');
    expect(outs[1]!.stderr).toMatch(/\[encoding 0-5\.\d+ s\]/);
  });

  it('folder.mjs transcribes every audio file of a folder; rx.mjs streams into a buffer', async () => {
    const f = await example('folder.mjs', folder, MODEL);
    const lines = f.stdout.trim().split('\n');
    expect(lines.map((l) => l.split('\t')[0])).toEqual(['a.wav', 'b.wav']);
    expect(lines[0]!.split('\t')[3]!.startsWith(START)).toBe(true);
    const r = await example('rx.mjs', WAV, MODEL);
    expect(r.stdout).toContain('有不少');
  });
});
