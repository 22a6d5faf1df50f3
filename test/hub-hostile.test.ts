// The downloader against a hostile hub or a tampered cache (issue 18), on the loopback fake hub: planted
// symlinks, hard links and FIFOs on every file the downloader writes, renames or reads in the cache; files
// with no announced size or hash; slow and trickling servers; the overall deadline and `pull --timeout`.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { runList } from '../src/cli/list.js';
import { runPull } from '../src/cli/pull.js';
import { MANIFEST_FILE, type Manifest } from '../src/hub/cache.js';
import { FILE_LIMITS } from '../src/hub/files.js';
import { listCachedModels } from '../src/hub/list.js';
import { UNVERIFIED_DOWNLOAD_WARNING, resolveModel, type ResolveModelOptions } from '../src/hub/resolve.js';
import { ensureDist, runCli } from './helpers/cli.js';
import { rejection } from './helpers/errors.js';
import { startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { goldenRoot } from './helpers/golden.js';

const SOURCE = join(goldenRoot(), 'models', 'tiny-a');
const WEIGHTS = 'model.safetensors';
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-hub-hostile-'));
const OUTSIDE_TEXT = 'outside the cache: must never change\n';

let hub: FakeHub;
/** tiny-a's small files with 3 MB of filler as the weights (downloads only; fast). */
const files: Record<string, Buffer> = {};

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let caseNo = 0;
function freshCache(): string {
  const d = join(scratch, `cache${caseNo++}`);
  mkdirSync(d);
  return d;
}

/** A file outside every cache, with known content and an old mtime. */
function outsideFile(content = OUTSIDE_TEXT): string {
  const p = join(scratch, `outside${caseNo++}.txt`);
  writeFileSync(p, content);
  utimesSync(p, new Date(2000, 0, 1), new Date(2000, 0, 1));
  return p;
}

function expectUntouched(p: string, content = OUTSIDE_TEXT): void {
  expect(readFileSync(p, 'utf8')).toBe(content);
  expect(statSync(p).mtime.getFullYear()).toBe(2000);
}

function opts(cacheDir: string, extra: ResolveModelOptions = {}): ResolveModelOptions {
  return { cacheDir, endpoint: hub.endpoint, offline: false, ...extra };
}

const revDir = (cache: string, repo = 'test/small') => join(cache, 'models', repo.replace('/', '--'), 'main');

function expectSameFiles(dir: string): void {
  for (const [name, data] of Object.entries(files)) {
    expect(lstatSync(join(dir, name)).isFile(), name).toBe(true);
    expect(sha(readFileSync(join(dir, name))), name).toBe(sha(data));
  }
}

function manifestOf(dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as Manifest;
}

function mkfifo(p: string): void {
  execFileSync('mkfifo', [p]);
}

beforeAll(async () => {
  for (const f of readdirSync(SOURCE)) if (f !== WEIGHTS) files[f] = readFileSync(join(SOURCE, f));
  const filler = Buffer.alloc(3_000_000);
  for (let i = 0; i < filler.length; i++) filler[i] = (i * 2654435761) >>> 24;
  files[WEIGHTS] = filler;
  hub = await startFakeHub();
  hub.addRepo('test/small', files);
  // config.json over the 16 MiB cap for JSON files (whitespace inside a valid object).
  hub.addRepo('test/huge-config', { ...files, 'config.json': Buffer.from(`{${' '.repeat(FILE_LIMITS.json + 1)}}`) });
});

afterEach(() => {
  hub.behaviour.api = true;
  hub.behaviour.noSize.clear();
  hub.behaviour.trickle.clear();
  hub.behaviour.trickleHead.clear();
  hub.behaviour.dropAfter.clear();
});

afterAll(async () => {
  await hub?.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('planted symlinks, hard links and FIFOs in the cache', () => {
  it.each(['config.json', WEIGHTS])('%s.partial as a symlink to a file outside: the outside file is untouched', async (file) => {
    const cache = freshCache();
    const dir = revDir(cache);
    mkdirSync(dir, { recursive: true });
    // The outside file holds a prefix of the real bytes, so that resuming into it would look attractive.
    const prefix = (files[file] as Buffer).subarray(0, 1000).toString('latin1');
    const outside = outsideFile(prefix);
    symlinkSync(outside, join(dir, `${file}.partial`));
    expect(await resolveModel('test/small', opts(cache))).toBe(dir);
    expectUntouched(outside, prefix);
    expectSameFiles(dir);
    expect(existsSync(join(dir, `${file}.partial`))).toBe(false);
  });

  it('a .partial hard-linked to a file outside is not appended to', async () => {
    const cache = freshCache();
    const dir = revDir(cache);
    mkdirSync(dir, { recursive: true });
    const prefix = (files[WEIGHTS] as Buffer).subarray(0, 1000).toString('latin1');
    const outside = outsideFile(prefix);
    linkSync(outside, join(dir, `${WEIGHTS}.partial`));
    await resolveModel('test/small', opts(cache));
    expectUntouched(outside, prefix);
    expectSameFiles(dir);
  });

  it('a destination file planted as a symlink is replaced by the real file, the target untouched', async () => {
    const cache = freshCache();
    const dir = revDir(cache);
    mkdirSync(dir, { recursive: true });
    const outside = outsideFile();
    symlinkSync(outside, join(dir, 'config.json'));
    symlinkSync(outside, join(dir, WEIGHTS));
    await resolveModel('test/small', opts(cache));
    expectUntouched(outside);
    expectSameFiles(dir);
  });

  it('a complete cached model whose file became a symlink is not used through it: the file is fetched again', async () => {
    const cache = freshCache();
    const dir = await resolveModel('test/small', opts(cache));
    const outside = outsideFile();
    rmSync(join(dir, 'vocab.json'));
    symlinkSync(outside, join(dir, 'vocab.json'));
    const n = hub.requests.length;
    expect(await resolveModel('test/small', opts(cache))).toBe(dir);
    expect(hub.requests.slice(n).some((r) => r.url.endsWith('/vocab.json'))).toBe(true);
    expectUntouched(outside);
    expectSameFiles(dir);
  });

  it('the manifest planted as a symlink or a FIFO is replaced, never written through or read', async () => {
    for (const plant of ['symlink', 'fifo'] as const) {
      const cache = freshCache();
      const dir = revDir(cache);
      mkdirSync(dir, { recursive: true });
      const outside = outsideFile();
      if (plant === 'symlink') symlinkSync(outside, join(dir, MANIFEST_FILE));
      else mkfifo(join(dir, MANIFEST_FILE));
      await resolveModel('test/small', opts(cache));
      expectUntouched(outside);
      expect(lstatSync(join(dir, MANIFEST_FILE)).isFile()).toBe(true);
      expect(manifestOf(dir).files.map((f) => f.name).sort()).toEqual(Object.keys(files).sort());
      expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    }
  });

  it('a lock planted as a symlink or a FIFO is broken at once, its target untouched', async () => {
    for (const plant of ['symlink', 'fifo'] as const) {
      const cache = freshCache();
      const dir = revDir(cache);
      mkdirSync(dir, { recursive: true });
      const outside = outsideFile();
      if (plant === 'symlink') symlinkSync(outside, `${dir}.lock`);
      else mkfifo(`${dir}.lock`);
      const t0 = Date.now();
      expect(await resolveModel('test/small', opts(cache))).toBe(dir);
      expect(Date.now() - t0).toBeLessThan(20_000); // not the 60 s of a stale lock
      expectUntouched(outside);
      expect(existsSync(`${dir}.lock`)).toBe(false);
    }
  });

  it('a .partial planted as a FIFO does not block the download', async () => {
    const cache = freshCache();
    const dir = revDir(cache);
    mkdirSync(dir, { recursive: true });
    mkfifo(join(dir, `${WEIGHTS}.partial`));
    await resolveModel('test/small', opts(cache));
    expectSameFiles(dir);
  });

  it.each([
    ['the repo directory', (cache: string) => join(cache, 'models', 'test--small')],
    ['the revision directory', (cache: string) => revDir(cache)],
    ['models/', (cache: string) => join(cache, 'models')],
  ])('%s planted as a symlink to a directory outside is IO_ERROR; nothing is written there', async (_what, where) => {
    const cache = freshCache();
    const target = join(scratch, `outside-dir${caseNo++}`);
    mkdirSync(target);
    const p = where(cache);
    mkdirSync(join(p, '..'), { recursive: true });
    symlinkSync(target, p);
    const n = hub.requests.length;
    const e = await rejection(resolveModel('test/small', opts(cache)));
    expect(e.code).toBe('IO_ERROR');
    expect(e.message).toContain('symbolic link');
    expect(readdirSync(target)).toEqual([]);
    expect(hub.requests.length).toBe(n);
  });
});

describe('files the hub gives no size or hash for', () => {
  it('are capped, downloaded, and recorded as unverified (manifest, list, warning)', async () => {
    hub.behaviour.api = false;
    hub.behaviour.noSize.add('config.json');
    hub.behaviour.noSize.add(WEIGHTS);
    const cache = freshCache();
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    let dir: string;
    try {
      dir = await resolveModel('test/small', opts(cache));
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expectSameFiles(dir);
    const byName = new Map(manifestOf(dir).files.map((f) => [f.name, f]));
    expect(byName.get('config.json')?.verified).toBe('none');
    expect(byName.get(WEIGHTS)?.verified).toBe('none');
    expect(byName.get('vocab.json')?.verified).toBe('git-sha1');
    expect(warnings.map((w) => (w as Error & { code?: string }).code)).toEqual([UNVERIFIED_DOWNLOAD_WARNING.code]);
    expect(warnings[0]?.message).toContain('config.json (unchecked)');
    const listed = await listCachedModels({ cacheDir: cache });
    expect(listed[0]).toMatchObject({ id: 'test/small', complete: true, verified: false });
    const out: string[] = [];
    await runList({ cacheDir: cache, out: new Writable({ write: (c: Buffer, _e, cb) => (out.push(c.toString()), cb()) }) });
    expect(out.join('')).toMatch(/test\/small\s+main\s+\S+ MB\s+complete \(unverified\)/);
  });

  it('a fully verified download lists as verified', async () => {
    const cache = freshCache();
    await resolveModel('test/small', opts(cache));
    expect((await listCachedModels({ cacheDir: cache }))[0]).toMatchObject({ complete: true, verified: true });
    expect(manifestOf(revDir(cache)).files.find((f) => f.name === WEIGHTS)?.verified).toBe('sha256');
  });

  it('a JSON file past its 16 MiB cap is DOWNLOAD_FAILED and leaves nothing behind', async () => {
    hub.behaviour.api = false;
    hub.behaviour.noSize.add('config.json');
    const cache = freshCache();
    const e = await rejection(resolveModel('test/huge-config', opts(cache)));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toContain(`${FILE_LIMITS.json}-byte limit`);
    const dir = revDir(cache, 'test/huge-config');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a JSON file whose listed size is over its cap is refused before any byte is fetched', async () => {
    const cache = freshCache();
    const n = hub.requests.length;
    const e = await rejection(resolveModel('test/huge-config', opts(cache)));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toContain('the hub lists');
    expect(hub.requests.slice(n).some((r) => r.url.endsWith('/config.json'))).toBe(false);
  });

  it('weights past maxWeightsBytes with no announced size are DOWNLOAD_FAILED naming the option', async () => {
    hub.behaviour.api = false;
    hub.behaviour.noSize.add(WEIGHTS);
    const cache = freshCache();
    const e = await rejection(resolveModel('test/small', opts(cache, { maxWeightsBytes: 1_000_000 })));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toContain('maxWeightsBytes');
    expect(existsSync(join(revDir(cache), WEIGHTS))).toBe(false);
    expect(existsSync(join(revDir(cache), `${WEIGHTS}.partial`))).toBe(false);
    expect(existsSync(join(revDir(cache), MANIFEST_FILE))).toBe(false);
  });
});

describe('slow servers, the deadline and pull --timeout', () => {
  it('a body slower than minBytesPerSecond fails (DOWNLOAD_FAILED, retried, .partial kept)', async () => {
    hub.behaviour.trickle.set(WEIGHTS, { bytes: 500, everyMs: 50 }); // 10 kB/s
    const cache = freshCache();
    const t0 = Date.now();
    const e = await rejection(resolveModel('test/small', opts(cache, { minBytesPerSecond: 100_000, timeoutMs: 400, retries: 1 })));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toContain('too slow');
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(statSync(join(revDir(cache), `${WEIGHTS}.partial`)).size).toBeGreaterThan(0);
    expect(existsSync(`${revDir(cache)}.lock`)).toBe(false);
  });

  it('a response head trickled a byte at a time fails after timeoutMs', async () => {
    hub.behaviour.trickleHead.set('config.json', { everyMs: 20 });
    const cache = freshCache();
    const t0 = Date.now();
    const e = await rejection(resolveModel('test/small', opts(cache, { timeoutMs: 500, retries: 0 })));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toContain('response headers');
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('deadlineMs ends a download that keeps trickling (the speed rule off), keeping the .partial', async () => {
    hub.behaviour.trickle.set(WEIGHTS, { bytes: 200, everyMs: 20 });
    const cache = freshCache();
    const t0 = Date.now();
    const e = await rejection(resolveModel('test/small', opts(cache, { minBytesPerSecond: 0, deadlineMs: 1500 })));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toContain('1500 ms deadline');
    expect(Date.now() - t0).toBeLessThan(6_000);
    expect(statSync(join(revDir(cache), `${WEIGHTS}.partial`)).size).toBeGreaterThan(0);
    expect(existsSync(`${revDir(cache)}.lock`)).toBe(false);
    // The next call resumes and finishes.
    hub.behaviour.trickle.clear();
    expectSameFiles(await resolveModel('test/small', opts(cache)));
  });

  it('rejects bad minBytesPerSecond, deadlineMs and maxWeightsBytes with INVALID_OPTION', async () => {
    for (const extra of [{ minBytesPerSecond: -1 }, { deadlineMs: 0 }, { deadlineMs: 2 ** 31 }, { maxWeightsBytes: 1.5 }] as ResolveModelOptions[]) {
      expect((await rejection(resolveModel('test/small', opts(freshCache(), extra)))).code).toBe('INVALID_OPTION');
    }
  });

  it('runPull({ timeoutSeconds }) is the deadline', async () => {
    hub.behaviour.trickle.set(WEIGHTS, { bytes: 200, everyMs: 20 });
    const cache = freshCache();
    const e = await rejection(runPull({ id: 'test/small', cacheDir: cache, endpoint: hub.endpoint, timeoutSeconds: 1, out: null, log: null }));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    expect(e.message).toContain('1000 ms deadline');
    await expect(runPull({ id: 'test/small', cacheDir: cache, endpoint: hub.endpoint, timeoutSeconds: 0, out: null, log: null })).rejects.toMatchObject({
      code: 'INVALID_OPTION',
    });
  });

  it('rustasr pull --timeout: a bad value is exit 2, a deadline is exit 1 naming it', async () => {
    ensureDist('cli/pull.js');
    const env = { ...process.env, RUSTASR_CACHE_DIR: freshCache() };
    const bad = await runCli(['pull', 'test/small', '--endpoint', hub.endpoint, '--timeout', 'soon'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--timeout must be a positive number of seconds');
    hub.behaviour.trickle.set(WEIGHTS, { bytes: 200, everyMs: 20 });
    const slow = await runCli(['pull', 'test/small', '--endpoint', hub.endpoint, '--timeout', '1'], env);
    expect(slow.code).toBe(1);
    expect(slow.stderr).toContain('DOWNLOAD_FAILED');
    expect(slow.stderr).toContain('1000 ms deadline');
  });
});
