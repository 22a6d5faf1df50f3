// The Metal backend's MSL kernels, run on the CPU (native/src/backend/metal/emulate.cpp): the only check the
// Metal arithmetic and indexing get without a Mac. The MSL source string is taken from metal_backend.mm as
// it is, so an edit to a kernel is checked here too.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { REPO_ROOT } from './helpers/golden.js';

const METAL_DIR = join(REPO_ROOT, 'native', 'src', 'backend', 'metal');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-metal-emu-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The MSL source of metal_backend.mm, with threadgroup arrays as statics and threadgroup pointers plain. */
function kernelsForEmulation(mm: string): string {
  const begin = mm.indexOf('R"MSL(');
  const end = mm.indexOf(')MSL"');
  if (begin < 0 || end < begin) throw new Error('no R"MSL( ... )MSL" source string in metal_backend.mm');
  return mm
    .slice(begin + 'R"MSL('.length, end)
    .replace('#include <metal_stdlib>', '')
    .replace('using namespace metal;', '')
    .replace(/^(\s*)threadgroup (float \w+\[[^*\n]*\];)/gm, '$1static $2')
    .replaceAll('threadgroup float*', 'float*');
}

describe.runIf(process.platform === 'linux')('Metal kernels under CPU emulation', () => {
  it('every kernel matches its reference (linear bf16/int8 gemv+gemm, norms, attention, rope, conv, embed, silu)', () => {
    writeFileSync(join(scratch, 'metal_kernels.inc'), kernelsForEmulation(readFileSync(join(METAL_DIR, 'metal_backend.mm'), 'utf8')));
    const exe = join(scratch, 'emulate');
    execFileSync('g++', ['-std=c++20', '-O1', '-pthread', '-Wno-attributes', '-I', scratch, join(METAL_DIR, 'emulate.cpp'), '-o', exe], {
      stdio: 'pipe',
    });
    const out = execFileSync(exe, { encoding: 'utf8' });
    expect(out).not.toContain('FAIL');
    expect(out.trimEnd().split('\n').at(-1)).toBe('all ok');
    expect(out.match(/ max diff \S+ ok$/gm)?.length).toBe(17); // every check ran
  });
});
