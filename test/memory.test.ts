// One huge write (a 200 MB WAV in a single end(buf)) must not be converted to float at once: the decoding
// stage yields one block at a time as it is read, so memory stays bounded by the streams' high-water marks.
// Measured in a child process (RSS growth above the input buffer itself), with generous bounds: converting
// the whole write at once costs 400 MB of float32 by itself (721 MB through transcriber() before the fix).
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { ensureDist } from './helpers/cli.js';
import { goldenPath, REPO_ROOT } from './helpers/golden.js';

const SCRIPT = join(REPO_ROOT, 'test', 'fixtures', 'huge-write.mjs');

function measure(mode: 'stage' | 'transcriber'): { growthMB: number; frames?: number; tokens?: number } {
  const out = execFileSync(process.execPath, ['--expose-gc', SCRIPT, join(REPO_ROOT, 'dist'), '200', mode, goldenPath('models', 'tiny-a')], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as { growthMB: number };
}

beforeAll(() => ensureDist('index.js'));

describe('a 200 MB WAV in one write', () => {
  it('through the AudioDecoder stage: RSS grows by far less than the float conversion (< 128 MB), every frame comes out', () => {
    const r = measure('stage');
    expect(r.frames).toBe((200 * 1024 * 1024) / 2);
    expect(r.growthMB).toBeLessThan(128);
  });

  it('through transcriber(): RSS grows by < 320 MB while the first segments decode', () => {
    const r = measure('transcriber');
    expect(r.tokens).toBe(4);
    expect(r.growthMB).toBeLessThan(320);
  });
});
