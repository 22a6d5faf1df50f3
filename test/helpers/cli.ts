// Running `rustasr` (node bin/rustasr.js) as a subprocess in tests. bin/rustasr.js runs dist/: CI builds it
// (`npm run build`) before the tests; locally, a dist/ older than src/ is rebuilt once (ensureDist).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { REPO_ROOT } from './golden.js';

export const BIN = join(REPO_ROOT, 'bin', 'rustasr.js');

function newestMtime(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestMtime(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

/** Rebuilds dist/ (tsc -p tsconfig.build.json) when `file` (relative to dist/) is missing or older than src/. */
export function ensureDist(file: string): void {
  const out = join(REPO_ROOT, 'dist', file);
  if (existsSync(out) && statSync(out).mtimeMs >= newestMtime(join(REPO_ROOT, 'src'))) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT, stdio: 'pipe' });
  } catch (err) {
    // tsc emits despite type errors elsewhere; only a missing output is fatal.
    if (!existsSync(out)) throw err;
  }
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with `env` as its whole environment; stdin is `stdinFile`'s bytes, or empty. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, stdinFile?: string): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, env, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (stdinFile) child.stdin!.end(readFileSync(stdinFile));
    else child.stdin!.end();
  });
}
