// Model download from a Hugging Face-style hub, against a local fake hub on 127.0.0.1 (never the network):
// cache layout, verification, resume, offline mode, sharded checkpoints, path safety, the pull/list commands.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { runList } from '../src/cli/list.js';
import { runPull } from '../src/cli/pull.js';
import { Model } from '../src/index.js';
import { MANIFEST_FILE, resolveCacheDir } from '../src/hub/cache.js';
import { listCachedModels } from '../src/hub/list.js';
import { resolveModel, type DownloadProgress, type ResolveModelOptions } from '../src/hub/resolve.js';
import { startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { goldenRoot } from './helpers/golden.js';
import { readSafetensors, writeSafetensors, type TensorEntry } from './helpers/safetensors.js';
import { rejection } from './helpers/errors.js';

const SOURCE = join(goldenRoot(), 'models', 'tiny-a');
const WEIGHTS = 'model.safetensors';
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-hub-'));

let hub: FakeHub;
/** tiny-a as is (loadable). */
const tinyFiles: Record<string, Buffer> = {};
/** tiny-a with 2 shards + index.json instead of model.safetensors (loadable). */
const shardedFiles: Record<string, Buffer> = {};
/** tiny-a with 6 MB of filler as model.safetensors: for the tests that only download (faster). */
const smallFiles: Record<string, Buffer> = {};

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Splits a safetensors file in two shards (tensors in header order) plus an index.json. */
function splitSafetensors(path: string): Record<string, Buffer> {
  const parts = readSafetensors(path);
  const names = Object.keys(parts.header).filter((n) => n !== '__metadata__');
  const half = Math.ceil(names.length / 2);
  const groups = [names.slice(0, half), names.slice(half)];
  const out: Record<string, Buffer> = {};
  const weightMap: Record<string, string> = {};
  let total = 0;
  groups.forEach((group, gi) => {
    const shard = `model-0000${gi + 1}-of-00002.safetensors`;
    const header: Record<string, TensorEntry> = {};
    const chunks: Buffer[] = [];
    let off = 0;
    for (const n of group) {
      const e = parts.header[n] as TensorEntry;
      const bytes = parts.data.subarray(e.data_offsets[0], e.data_offsets[1]);
      header[n] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + bytes.length] };
      chunks.push(bytes);
      off += bytes.length;
      weightMap[n] = shard;
    }
    total += off;
    const file = join(scratch, shard);
    writeSafetensors(file, { header, data: Buffer.concat(chunks) });
    out[shard] = readFileSync(file);
  });
  out['model.safetensors.index.json'] = Buffer.from(JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }));
  return out;
}

let caseNo = 0;
/** A fresh, empty cache root for one test. */
function freshCache(): string {
  const d = join(scratch, `cache${caseNo++}`);
  mkdirSync(d);
  return d;
}

function opts(cacheDir: string, extra: ResolveModelOptions = {}): ResolveModelOptions {
  return { cacheDir, endpoint: hub.endpoint, offline: false, ...extra };
}

function expectSameFiles(dir: string, files: Record<string, Buffer>): void {
  for (const [name, data] of Object.entries(files)) expect(sha(readFileSync(join(dir, name))), name).toBe(sha(data));
}

function sink(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  return {
    stream: new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk.toString());
        cb();
      },
    }),
    text: () => chunks.join(''),
  };
}

const cdnGets = (files: Record<string, Buffer>, file: string) => {
  const blobSha = sha(files[file] ?? Buffer.alloc(0));
  return hub.requests.filter((r) => r.url.startsWith(`/cdn/${blobSha}`));
};

beforeAll(async () => {
  for (const f of readdirSync(SOURCE)) tinyFiles[f] = readFileSync(join(SOURCE, f));
  for (const [f, b] of Object.entries(tinyFiles)) if (f !== WEIGHTS) shardedFiles[f] = b;
  Object.assign(shardedFiles, splitSafetensors(join(SOURCE, WEIGHTS)));
  const filler = Buffer.alloc(6_000_000);
  for (let i = 0; i < filler.length; i++) filler[i] = (i * 2654435761) >>> 24;
  Object.assign(smallFiles, tinyFiles, { [WEIGHTS]: filler });
  hub = await startFakeHub();
  hub.addRepo('test/tiny-a', tinyFiles);
  hub.addRepo('test/tiny-sharded', shardedFiles);
  hub.addRepo('test/small', smallFiles);
});

afterEach(() => {
  hub.behaviour.api = true;
  hub.behaviour.dropAfter.clear();
  hub.behaviour.corrupt.clear();
  hub.behaviour.ignoreRange = false;
});

afterAll(async () => {
  await hub?.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('resolveModel from a hub', () => {
  it('pulls into the cache layout, files identical, loads, and a second resolve makes no request', async () => {
    const cache = freshCache();
    const progress: DownloadProgress[] = [];
    const dir = await resolveModel('test/tiny-a', opts(cache, { onProgress: (p) => progress.push(p) }));
    expect(dir).toBe(join(cache, 'models', 'test--tiny-a', 'main'));
    expectSameFiles(dir, tinyFiles);
    expect(readdirSync(dir).sort()).toEqual([...Object.keys(tinyFiles), MANIFEST_FILE].sort());
    const last = progress.filter((p) => p.file === WEIGHTS).at(-1);
    expect(last).toEqual({ file: WEIGHTS, received: tinyFiles[WEIGHTS]?.length, total: tinyFiles[WEIGHTS]?.length });

    const manifest = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as { files: { name: string; sha256: string }[] };
    expect(manifest.files.find((f) => f.name === WEIGHTS)?.sha256).toBe(sha(tinyFiles[WEIGHTS] ?? Buffer.alloc(0)));

    const model = await Model.load(dir, { threads: 1 });
    expect(model.info.vocabSize).toBe(151936);
    model.dispose();

    const before = hub.requests.length;
    expect(await resolveModel('test/tiny-a', opts(cache))).toBe(dir);
    expect(await resolveModel('test/tiny-a', { cacheDir: cache, offline: true })).toBe(dir);
    expect(hub.requests.length).toBe(before);
  });

  it('works from the resolve headers alone (no listing API), verifying sha256 and git blob sha1', async () => {
    hub.behaviour.api = false;
    const cache = freshCache();
    const dir = await resolveModel('test/small', opts(cache));
    expectSameFiles(dir, smallFiles);
    expect(hub.requests.some((r) => r.url.startsWith('/api/'))).toBe(true);
  });

  it('shares one download between concurrent resolves of the same model', async () => {
    const cache = freshCache();
    const before = cdnGets(smallFiles, WEIGHTS).length;
    const seen: number[] = [0, 0];
    const [a, b] = await Promise.all([
      resolveModel('test/small', opts(cache, { onProgress: () => seen[0]!++ })),
      resolveModel('test/small', opts(cache, { onProgress: () => seen[1]!++ })),
    ]);
    expect(a).toBe(b);
    expect(cdnGets(smallFiles, WEIGHTS).length - before).toBe(1);
    expect(seen[0]).toBeGreaterThan(0);
    expect(seen[1]).toBeGreaterThan(0);
  });

  it('resumes an interrupted download with a Range request', async () => {
    const cache = freshCache();
    const cut = 5_000_000;
    hub.behaviour.dropAfter.set(WEIGHTS, { bytes: cut, times: 1 });
    const e = await rejection(resolveModel('test/tiny-a', opts(cache, { retries: 0 })));
    expect(e.code).toBe('DOWNLOAD_FAILED');
    const dir = join(cache, 'models', 'test--tiny-a', 'main');
    const partialSize = statSync(join(dir, `${WEIGHTS}.partial`)).size;
    expect(partialSize).toBeGreaterThan(0);
    expect(partialSize).toBeLessThanOrEqual(cut);
    expect(existsSync(join(dir, WEIGHTS))).toBe(false);
    expect(existsSync(join(dir, MANIFEST_FILE))).toBe(false);
    expect((await listCachedModels({ cacheDir: cache }))[0]).toMatchObject({ id: 'test/tiny-a', complete: false });

    const n = hub.requests.length;
    expect(await resolveModel('test/tiny-a', opts(cache))).toBe(dir);
    const ranged = hub.requests.slice(n).filter((r) => r.range !== undefined);
    expect(ranged.length).toBeGreaterThanOrEqual(2); // the hub's resolve URL, then the CDN after the redirect
    expect(ranged.every((r) => r.range === `bytes=${partialSize}-`)).toBe(true);
    expectSameFiles(dir, tinyFiles);
    expect(existsSync(join(dir, `${WEIGHTS}.partial`))).toBe(false);
  });

  it('retries a dropped connection by itself, resuming', async () => {
    const cache = freshCache();
    hub.behaviour.dropAfter.set(WEIGHTS, { bytes: 1_000_000, times: 1 });
    const n = hub.requests.length;
    const dir = await resolveModel('test/small', opts(cache));
    expectSameFiles(dir, smallFiles);
    expect(hub.requests.slice(n).some((r) => r.range?.startsWith('bytes=') === true)).toBe(true);
  });

  it('restarts from scratch when the server answers a Range request with 200', async () => {
    const cache = freshCache();
    hub.behaviour.dropAfter.set(WEIGHTS, { bytes: 3_000_000, times: 1 });
    await rejection(resolveModel('test/small', opts(cache, { retries: 0 })));
    hub.behaviour.ignoreRange = true;
    const dir = await resolveModel('test/small', opts(cache));
    expectSameFiles(dir, smallFiles);
  });

  it('rejects a corrupted weights file with CHECKSUM_MISMATCH and keeps it out of the cache', async () => {
    const cache = freshCache();
    hub.behaviour.corrupt.add(WEIGHTS);
    const e = await rejection(resolveModel('test/small', opts(cache)));
    expect(e.code).toBe('CHECKSUM_MISMATCH');
    expect(e.message).toContain('sha256');
    const dir = join(cache, 'models', 'test--small', 'main');
    expect(existsSync(join(dir, WEIGHTS))).toBe(false);
    expect(existsSync(join(dir, `${WEIGHTS}.partial`))).toBe(false);
    expect(existsSync(join(dir, MANIFEST_FILE))).toBe(false);
    await expect(resolveModel('test/small', { cacheDir: cache, offline: true })).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });
  });

  it('a resumed .partial with wrong bytes fails sha256 and is downloaded again from scratch, once', async () => {
    const cache = freshCache();
    const dir = join(cache, 'models', 'test--small', 'main');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${WEIGHTS}.partial`), Buffer.alloc(1_000_000, 7)); // not a prefix of the file
    const n = hub.requests.length;
    expectSameFiles(await resolveModel('test/small', opts(cache)), smallFiles);
    const cdn = cdnGets(smallFiles, WEIGHTS).filter((r) => hub.requests.indexOf(r) >= n);
    expect(cdn.map((r) => r.range)).toEqual(['bytes=1000000-', undefined]);
  });

  it('a complete .partial left before its rename is verified locally, not downloaded again', async () => {
    const cache = freshCache();
    const dir = join(cache, 'models', 'test--small', 'main');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${WEIGHTS}.partial`), smallFiles[WEIGHTS] ?? Buffer.alloc(0));
    const n = hub.requests.length;
    expectSameFiles(await resolveModel('test/small', opts(cache)), smallFiles);
    expect(cdnGets(smallFiles, WEIGHTS).filter((r) => hub.requests.indexOf(r) >= n)).toEqual([]);
  });

  it('rejects a corrupted small file by its git blob sha1 (ETag) when there is no listing API', async () => {
    hub.behaviour.api = false;
    hub.behaviour.corrupt.add('config.json');
    const cache = freshCache();
    const e = await rejection(resolveModel('test/small', opts(cache)));
    expect(e.code).toBe('CHECKSUM_MISMATCH');
    expect(e.message).toContain('git blob sha1');
    expect(existsSync(join(cache, 'models', 'test--small', 'main', 'config.json'))).toBe(false);
  });

  it('resolves and loads a sharded checkpoint (index.json + 2 shards)', async () => {
    const cache = freshCache();
    const dir = await resolveModel('test/tiny-sharded', opts(cache));
    expectSameFiles(dir, shardedFiles);
    expect(existsSync(join(dir, WEIGHTS))).toBe(false);
    const model = await Model.load(dir, { threads: 1 });
    expect(model.info.vocabSize).toBe(151936);
    model.dispose();
  });

  it.each([
    ['a parent path', '../evil.safetensors'],
    ['an absolute path', '/tmp/rustasr-evil.safetensors'],
    ['a sub-directory', 'sub/evil.safetensors'],
  ])('rejects an index.json naming %s and writes nothing outside the cache', async (_what, shard) => {
    const id = `evil/x${caseNo}`;
    hub.addRepo(id, {
      ...shardedFiles,
      'model.safetensors.index.json': Buffer.from(JSON.stringify({ weight_map: { 'a.weight': shard, 'b.weight': 'model-00001-of-00002.safetensors' } })),
    });
    const root = freshCache();
    const cache = join(root, 'cache');
    const n = hub.requests.length;
    const e = await rejection(resolveModel(id, opts(cache)));
    expect(e.code).toBe('CORRUPT_WEIGHTS');
    expect(readdirSync(root)).toEqual(['cache']);
    expect(readdirSync(join(cache, 'models'))).toEqual([id.replace('/', '--')]);
    const dir = join(cache, 'models', id.replace('/', '--'), 'main');
    expect(readdirSync(dir).filter((f) => f.includes('safetensors'))).toEqual([]);
    expect(hub.requests.slice(n).some((r) => r.url.includes('evil.safetensors') || r.url.includes('00001-of'))).toBe(false);
    expect(existsSync('/tmp/rustasr-evil.safetensors')).toBe(false);
  });

  it('offline with an empty cache is MODEL_NOT_FOUND saying so, with no request', async () => {
    const n = hub.requests.length;
    const e = await rejection(resolveModel('test/tiny-a', { cacheDir: freshCache(), endpoint: hub.endpoint, offline: true }));
    expect(e.code).toBe('MODEL_NOT_FOUND');
    expect(e.message).toContain('offline');
    const saved = process.env['HF_HUB_OFFLINE'];
    process.env['HF_HUB_OFFLINE'] = '1';
    try {
      const e2 = await rejection(resolveModel('test/tiny-a', { cacheDir: freshCache(), endpoint: hub.endpoint }));
      expect(e2.code).toBe('MODEL_NOT_FOUND');
    } finally {
      if (saved === undefined) delete process.env['HF_HUB_OFFLINE'];
      else process.env['HF_HUB_OFFLINE'] = saved;
    }
    expect(hub.requests.length).toBe(n);
  });

  it.each(['tiny-a', 'a/b/c', 'owner/..', 'own er/name', '-owner/name', 'owner/name-', 'a--b/c', 'owner/name.', 'owner/', 'x/' + 'n'.repeat(97)])(
    'rejects the invalid repo id %j with INVALID_OPTION',
    async (id) => {
      const n = hub.requests.length;
      const e = await rejection(resolveModel(id, opts(freshCache())));
      expect(e.code).toBe('INVALID_OPTION');
      expect(hub.requests.length).toBe(n);
    },
  );

  it.each(['refs/pr/1', '..', '.hidden', 'a b'])('rejects the invalid revision %j with INVALID_OPTION', async (revision) => {
    const e = await rejection(resolveModel('test/tiny-a', opts(freshCache(), { revision })));
    expect(e.code).toBe('INVALID_OPTION');
  });

  it('an unknown repo or revision is MODEL_NOT_FOUND', async () => {
    expect((await rejection(resolveModel('nobody/nothing', opts(freshCache())))).code).toBe('MODEL_NOT_FOUND');
    expect((await rejection(resolveModel('test/tiny-a', opts(freshCache(), { revision: 'v9' })))).code).toBe('MODEL_NOT_FOUND');
  });

  it('a local directory is returned as is, a missing one is MODEL_NOT_FOUND', async () => {
    const n = hub.requests.length;
    expect(await resolveModel(SOURCE, opts(freshCache()))).toBe(SOURCE);
    expect((await rejection(resolveModel('./no/such/model-dir', opts(freshCache())))).code).toBe('MODEL_NOT_FOUND');
    expect((await rejection(resolveModel(join(scratch, 'nope'), opts(freshCache())))).code).toBe('MODEL_NOT_FOUND');
    expect(hub.requests.length).toBe(n);
  });

  it('aborts with ABORTED and keeps the .partial for a later resume', async () => {
    const cache = freshCache();
    const ac = new AbortController();
    const e = await rejection(
      resolveModel('test/small', opts(cache, { signal: ac.signal, onProgress: (p) => p.file === WEIGHTS && p.received > 2_000_000 && ac.abort() })),
    );
    expect(e.code).toBe('ABORTED');
    const dir = join(cache, 'models', 'test--small', 'main');
    expect(statSync(join(dir, `${WEIGHTS}.partial`)).size).toBeGreaterThan(0);
    expect(existsSync(`${dir}.lock`)).toBe(false);
    expectSameFiles(await resolveModel('test/small', opts(cache)), smallFiles);
  });

  it('waits for a live cross-process lock and breaks a dead one', async () => {
    const cache = freshCache();
    const dir = join(cache, 'models', 'test--small', 'main');
    mkdirSync(dir, { recursive: true });
    // A lock of a live process (this one, as another process would hold it): resolve waits for its release.
    writeFileSync(`${dir}.lock`, JSON.stringify({ pid: process.pid, host: hostname() }));
    let done = false;
    const p = resolveModel('test/small', opts(cache)).then((d) => ((done = true), d));
    await new Promise((r) => setTimeout(r, 400));
    expect(done).toBe(false);
    rmSync(`${dir}.lock`);
    expect(await p).toBe(dir);

    // A lock left by a process that no longer exists is broken at once.
    const cache2 = freshCache();
    const dir2 = join(cache2, 'models', 'test--small', 'main');
    mkdirSync(dir2, { recursive: true });
    writeFileSync(`${dir2}.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname() }));
    expect(await resolveModel('test/small', opts(cache2))).toBe(dir2);
    expect(existsSync(`${dir2}.lock`)).toBe(false);
  });

  it('defaults the cache to $RUSTASR_CACHE_DIR, else $XDG_CACHE_HOME/rustasr', () => {
    const saved = { r: process.env['RUSTASR_CACHE_DIR'], x: process.env['XDG_CACHE_HOME'] };
    try {
      process.env['RUSTASR_CACHE_DIR'] = '/tmp/r-cache';
      process.env['XDG_CACHE_HOME'] = '/tmp/xdg';
      expect(resolveCacheDir()).toBe('/tmp/r-cache');
      expect(resolveCacheDir({ cacheDir: '/tmp/explicit' })).toBe('/tmp/explicit');
      delete process.env['RUSTASR_CACHE_DIR'];
      expect(resolveCacheDir()).toBe('/tmp/xdg/rustasr');
    } finally {
      for (const [k, v] of [['RUSTASR_CACHE_DIR', saved.r], ['XDG_CACHE_HOME', saved.x]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('pull and list commands (in process)', () => {
  it('pull prints the directory, list shows it', async () => {
    const cache = freshCache();
    const out = sink();
    const log = sink();
    const dir = await runPull({ id: 'test/small', cacheDir: cache, endpoint: hub.endpoint, out: out.stream, log: log.stream });
    expect(out.text()).toBe(`${dir}\n`);
    expect(log.text()).toContain(`pull: ${WEIGHTS} 6.0 MB`);
    expectSameFiles(dir, smallFiles);

    writeFileSync(join(cache, 'stray-file'), 'x'); // ignored by list
    const json = sink();
    await runList({ cacheDir: cache, json: true, out: json.stream });
    const listed = JSON.parse(json.text()) as { id: string; revision: string; dir: string; bytes: number; complete: boolean }[];
    const total = Object.values(smallFiles).reduce((a, b) => a + b.length, 0);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ id: 'test/small', revision: 'main', dir, complete: true });
    expect(listed[0]?.bytes).toBeGreaterThan(total);

    const table = sink();
    await runList({ cacheDir: cache, out: table.stream });
    expect(table.text()).toMatch(/test\/small\s+main\s+10\.\d MB\s+complete/);
  });

  it('pull of an invalid id is INVALID_OPTION (exit code 2 in the CLI)', async () => {
    await expect(runPull({ id: 'not a repo', cacheDir: freshCache(), endpoint: hub.endpoint, out: null, log: null })).rejects.toMatchObject({
      code: 'INVALID_OPTION',
    });
  });
});
