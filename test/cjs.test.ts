// The CommonJS build (dist/cjs, made by `npm run build:ts`): require() gives the same API as import, and
// rustasr/rx shares the index bundle's classes. scripts/pack-test.sh checks it again from a packed tarball.
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import * as esm from '../src/index.js';
import { ensureDist } from './helpers/cli.js';
import { goldenPath, loadCase, REPO_ROOT } from './helpers/golden.js';

describe('require("rustasr")', () => {
  it('exports what the ES module exports, transcribes the golden ids, and rustasr/rx loads', async () => {
    ensureDist('index.js');
    const bundle = join(REPO_ROOT, 'dist', 'cjs', 'index.js');
    if (!existsSync(bundle) || statSync(bundle).mtimeMs < statSync(join(REPO_ROOT, 'dist', 'index.js')).mtimeMs) {
      execFileSync(process.execPath, [join(REPO_ROOT, 'scripts', 'build-bundles.mjs')], { cwd: REPO_ROOT });
    }
    const require = createRequire(join(REPO_ROOT, 'package.json'));
    const cjs = require('rustasr') as typeof esm;
    const rx = require('rustasr/rx') as Record<string, unknown>;
    expect(require.resolve('rustasr')).toBe(join(REPO_ROOT, 'dist', 'cjs', 'index.js'));
    expect(Object.keys(cjs).sort()).toEqual(Object.keys(esm).sort());
    expect(Object.keys(rx).length).toBeGreaterThan(0);
    const c = await loadCase('tiny-a__en_5s');
    const want = c.json.greedy.generated_ids;
    const r = await cjs.transcribe(goldenPath('audio', 'en_5s.wav'), { model: goldenPath('models', 'tiny-a'), maxNewTokens: want.length });
    expect(r.tokens).toEqual(want);
    const e = await cjs.decodeAudio(Buffer.from('not audio at all')).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(cjs.RustAsrError);
    expect((e as esm.RustAsrError).code).toBe('UNSUPPORTED_AUDIO_FORMAT');
  });
});
