// resolveModel(): a local model directory, or a Hugging Face repo id downloaded into (or found in) the cache.
//
// Downloads go to <file>.partial, are verified (size, and sha256 or the git blob sha1 when the hub says which),
// fsynced and renamed into place; an interrupted .partial is resumed with a Range request. Once every file is
// in place a manifest is written: a revision directory with a complete manifest resolves with no network.
// See docs/models.md.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { RustAsrError } from '../errors.js';
import { notUtf8Hint, showPath } from './files.js';
import {
  LOCK_SUFFIX,
  PARTIAL_SUFFIX,
  acquireLock,
  completeManifest,
  expandHome,
  isSafeFileName,
  isTruthyEnv,
  parseRepoId,
  resolveCacheDir,
  revisionDir,
  sleep,
  syncDir,
  syncFile,
  validateRevision,
  writeManifest,
  type ManifestFile,
  type RepoId,
} from './cache.js';
import { RETRYABLE, abortedError, header, httpGet, readBody, retryable, type HopInfo } from './http.js';

export interface DownloadProgress {
  /** File name inside the model directory. */
  file: string;
  /** Bytes of this file on disk so far (a resumed download starts at the resumed offset). */
  received: number;
  /** Expected size of the file, when known. */
  total: number | undefined;
}

export interface ResolveModelOptions {
  /** Cache root (default: $RUSTASR_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/rustasr). */
  cacheDir?: string;
  /** Use only the cache (default: $RUSTASR_OFFLINE=1 or $HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Hub base URL (default: $HF_ENDPOINT, else https://huggingface.co). */
  endpoint?: string;
  /** Branch, tag or commit hash (default 'main'). Names containing '/' are not supported. */
  revision?: string;
  /** Called as bytes arrive (per file). */
  onProgress?: (p: DownloadProgress) => void;
  /** Aborts the wait (and the download, once no other caller waits for it) with code ABORTED. */
  signal?: AbortSignal;
  /** Bearer token for gated/private repos (default: $HF_TOKEN); sent to the endpoint's origin only. */
  token?: string;
  /** Retries per file after a network failure, a 5xx or a truncated body, each resuming the .partial (default 2). */
  retries?: number;
  /** Socket idle timeout in ms (default 30000). */
  timeoutMs?: number;
}

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';

/** The files of a Qwen3-ASR checkpoint besides the weights. */
export const MODEL_FILES: readonly string[] = [
  'config.json',
  'preprocessor_config.json',
  'generation_config.json',
  'chat_template.json',
  'tokenizer_config.json',
  'vocab.json',
  'merges.txt',
];
export const SINGLE_WEIGHTS = 'model.safetensors';
export const WEIGHTS_INDEX = 'model.safetensors.index.json';

const MAX_REDIRECTS = 10;
const MAX_JSON_BYTES = 32 << 20;
const MAX_SHARDS = 10_000;
const USER_AGENT = `rustasr/0.1.0; node/${process.versions.node}`;

function isLocalSpec(s: string): boolean {
  return s.startsWith('.') || s.startsWith('/') || s.startsWith('~') || s.startsWith('\\') || /^[A-Za-z]:[\\/]/.test(s);
}

async function isDirectory(p: string | Buffer): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

function normalizeEndpoint(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new RustAsrError('INVALID_OPTION', `invalid hub endpoint ${JSON.stringify(raw)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new RustAsrError('INVALID_OPTION', `hub endpoint must be http(s), got ${JSON.stringify(raw)}`);
  }
  return u.href.replace(/\/+$/, '');
}

/**
 * Returns a local model directory for `idOrDir`:
 * - an existing directory, or anything starting with '.', '/', '~' (or a Windows drive), is a local directory
 *   (returned as an absolute path; MODEL_NOT_FOUND if it does not exist);
 * - otherwise a Hugging Face repo id `owner/name` (INVALID_OPTION if malformed): the cached copy under
 *   <cache>/models/<owner>--<name>/<revision> when complete (no network at all), else it is downloaded.
 * Offline (opts.offline, RUSTASR_OFFLINE=1, HF_HUB_OFFLINE=1), a model missing from the cache is MODEL_NOT_FOUND.
 */
export async function resolveModel(idOrDir: string, opts?: ResolveModelOptions): Promise<string>;
export async function resolveModel(idOrDir: string | Buffer, opts?: ResolveModelOptions): Promise<string | Buffer>;
export async function resolveModel(idOrDir: string | Buffer, opts: ResolveModelOptions = {}): Promise<string | Buffer> {
  if (Buffer.isBuffer(idOrDir)) {
    // The bytes of a local directory's path (a name that is not valid UTF-8): used as they are.
    if (idOrDir.length === 0 || idOrDir.includes(0)) throw new RustAsrError('INVALID_OPTION', 'a model directory Buffer must be non-empty, without NUL bytes');
    if (await isDirectory(idOrDir)) return idOrDir;
    throw new RustAsrError('MODEL_NOT_FOUND', `model directory not found: ${showPath(idOrDir)}`);
  }
  if (typeof idOrDir !== 'string' || idOrDir.trim() === '') {
    throw new RustAsrError('INVALID_OPTION', 'a model directory or Hugging Face repo id is required');
  }
  if (idOrDir.includes('\0')) throw new RustAsrError('INVALID_OPTION', 'a model directory or repo id must not contain a NUL character');
  // stat the path as given (not lexically normalised: 'x/..' is not a directory when x does not exist).
  const expanded = expandHome(idOrDir);
  if (isLocalSpec(idOrDir) || (await isDirectory(expanded))) {
    const localPath = resolvePath(expanded);
    if (await isDirectory(expanded)) return localPath;
    throw new RustAsrError('MODEL_NOT_FOUND', `model directory not found: ${localPath}${notUtf8Hint(idOrDir)}`);
  }
  const repo = parseRepoId(idOrDir);
  const revision = validateRevision(opts.revision ?? DEFAULT_REVISION);
  if (opts.retries !== undefined && (!Number.isInteger(opts.retries) || opts.retries < 0)) {
    throw new RustAsrError('INVALID_OPTION', `retries must be a non-negative integer, got ${String(opts.retries)}`);
  }
  if (opts.timeoutMs !== undefined && !(opts.timeoutMs > 0)) {
    throw new RustAsrError('INVALID_OPTION', `timeoutMs must be positive, got ${String(opts.timeoutMs)}`);
  }
  const dir = revisionDir(resolveCacheDir(opts), repo, revision);
  if (await completeManifest(dir)) return dir;
  const offline = opts.offline ?? (isTruthyEnv('RUSTASR_OFFLINE') || isTruthyEnv('HF_HUB_OFFLINE'));
  if (offline) {
    throw new RustAsrError(
      'MODEL_NOT_FOUND',
      `${repo.id}@${revision} is not in the cache (${dir}) and offline mode is on (RUSTASR_OFFLINE / HF_HUB_OFFLINE)`,
    );
  }
  if (opts.signal?.aborted) throw abortedError();
  const endpoint = normalizeEndpoint(opts.endpoint ?? process.env['HF_ENDPOINT'] ?? DEFAULT_ENDPOINT);
  const token = opts.token ?? (process.env['HF_TOKEN'] || undefined);
  const settings: Settings = {
    repo,
    revision,
    dir,
    endpoint,
    authorization: token ? { origin: new URL(endpoint).origin, value: `Bearer ${token}` } : undefined,
    retries: opts.retries ?? 2,
    timeoutMs: opts.timeoutMs ?? 30_000,
  };
  return joinDownload(dir, (signal, emit) => downloadModel(settings, signal, emit), opts);
}

// ------------------------------------------------------------------------- one download per directory

interface Subscriber {
  onProgress?: (p: DownloadProgress) => void;
}

interface Job {
  promise: Promise<string>;
  subscribers: Set<Subscriber>;
  controller: AbortController;
}

const jobs = new Map<string, Job>();

/** Joins the in-flight download of `key` (or starts it); progress goes to every waiting caller. */
function joinDownload(
  key: string,
  start: (signal: AbortSignal, emit: (p: DownloadProgress) => void) => Promise<string>,
  opts: ResolveModelOptions,
): Promise<string> {
  let job = jobs.get(key);
  if (!job) {
    const controller = new AbortController();
    const subscribers = new Set<Subscriber>();
    const emit = (p: DownloadProgress) => {
      for (const s of subscribers) {
        try {
          s.onProgress?.(p);
        } catch {
          // a throwing progress callback must not break a download other callers share
        }
      }
    };
    const created: Job = { promise: Promise.resolve(''), subscribers, controller };
    created.promise = start(controller.signal, emit).finally(() => {
      if (jobs.get(key) === created) jobs.delete(key);
    });
    created.promise.catch(() => undefined); // rejections are delivered to the callers below
    jobs.set(key, created);
    job = created;
  }
  const active = job;
  const sub: Subscriber = { onProgress: opts.onProgress };
  active.subscribers.add(sub);
  const signal = opts.signal;
  return new Promise<string>((resolveJoin, rejectJoin) => {
    const onAbort = () => {
      active.subscribers.delete(sub);
      if (active.subscribers.size === 0) {
        // The last caller stops the download; it rejects once the download has cleaned up (lock released,
        // files closed), so that a retry right after the rejection finds a consistent cache.
        if (jobs.get(key) === active) jobs.delete(key);
        active.controller.abort();
        active.promise.then(
          () => rejectJoin(abortedError()),
          () => rejectJoin(abortedError()),
        );
        return;
      }
      rejectJoin(abortedError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    active.promise.then(
      (v) => {
        signal?.removeEventListener('abort', onAbort);
        active.subscribers.delete(sub);
        resolveJoin(v);
      },
      (err: unknown) => {
        signal?.removeEventListener('abort', onAbort);
        active.subscribers.delete(sub);
        rejectJoin(err);
      },
    );
  });
}

// ----------------------------------------------------------------------------------------- download

interface Settings {
  repo: RepoId;
  revision: string;
  dir: string;
  endpoint: string;
  authorization: { origin: string; value: string } | undefined;
  retries: number;
  timeoutMs: number;
}

/** What we know about a remote file before downloading it. */
interface Expected {
  size?: number;
  sha256?: string;
  /** Git blob sha1 (non-LFS files). */
  gitSha1?: string;
}

interface Ctx extends Settings {
  signal: AbortSignal;
  emit: (p: DownloadProgress) => void;
  commit: string | undefined;
}

const HEX64 = /^[0-9a-f]{64}$/;
const HEX40 = /^[0-9a-f]{40}$/;

function resolveUrl(ctx: Ctx, file: string): URL {
  const { owner, name } = ctx.repo;
  return new URL(
    `${ctx.endpoint}/${encodeURIComponent(owner)}/${encodeURIComponent(name)}/resolve/${encodeURIComponent(ctx.revision)}/${encodeURIComponent(file)}`,
  );
}

function baseHeaders(): Record<string, string> {
  return { 'user-agent': USER_AGENT, 'accept-encoding': 'identity' };
}

/** The hub's file listing: GET /api/models/<repo>/revision/<rev>?blobs=true. Undefined when unavailable. */
async function fetchListing(ctx: Ctx): Promise<Map<string, Expected> | undefined> {
  const { owner, name } = ctx.repo;
  const url = new URL(
    `${ctx.endpoint}/api/models/${encodeURIComponent(owner)}/${encodeURIComponent(name)}/revision/${encodeURIComponent(ctx.revision)}?blobs=true`,
  );
  let body: Buffer;
  try {
    const r = await httpGet(url, {
      headers: { ...baseHeaders(), accept: 'application/json' },
      authorization: ctx.authorization,
      signal: ctx.signal,
      timeoutMs: ctx.timeoutMs,
      maxRedirects: MAX_REDIRECTS,
    });
    if (r.status !== 200) {
      r.res.resume();
      return undefined;
    }
    body = await readBody(r.res, MAX_JSON_BYTES, ctx.signal);
  } catch {
    if (ctx.signal.aborted) throw abortedError();
    return undefined; // mirrors without the API: fall back to the resolve headers
  }
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  const o = json as { sha?: unknown; siblings?: unknown };
  if (!Array.isArray(o.siblings)) return undefined;
  if (typeof o.sha === 'string' && HEX40.test(o.sha)) ctx.commit = o.sha;
  const files = new Map<string, Expected>();
  for (const s of o.siblings as unknown[]) {
    const e = s as { rfilename?: unknown; size?: unknown; blobId?: unknown; lfs?: { sha256?: unknown; size?: unknown } | null } | null;
    if (!e || typeof e.rfilename !== 'string') continue;
    const exp: Expected = {};
    const lfs = e.lfs && typeof e.lfs === 'object' ? e.lfs : undefined;
    if (lfs) {
      if (typeof lfs.sha256 === 'string' && HEX64.test(lfs.sha256)) exp.sha256 = lfs.sha256;
      if (Number.isSafeInteger(lfs.size)) exp.size = lfs.size as number;
    } else if (typeof e.blobId === 'string' && HEX40.test(e.blobId)) {
      exp.gitSha1 = e.blobId;
    }
    if (exp.size === undefined && Number.isSafeInteger(e.size)) exp.size = e.size as number;
    files.set(e.rfilename, exp);
  }
  return files;
}

function unquoteEtag(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  return v.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1').toLowerCase();
}

/** Size and hashes the hub announces in a resolve response chain (the hub's first response, not the CDN's). */
function expectedFromHeaders(chain: HopInfo[]): Expected {
  const exp: Expected = {};
  const first = chain[0];
  if (!first) return exp;
  for (const hop of chain) {
    const linkedSize = header(hop.headers, 'x-linked-size');
    if (exp.size === undefined && linkedSize !== undefined && /^\d+$/.test(linkedSize)) exp.size = Number(linkedSize);
    const linkedEtag = unquoteEtag(header(hop.headers, 'x-linked-etag'));
    if (exp.sha256 === undefined && linkedEtag !== undefined && HEX64.test(linkedEtag)) exp.sha256 = linkedEtag;
  }
  const etag = unquoteEtag(header(first.headers, 'etag'));
  if (etag !== undefined) {
    if (exp.sha256 === undefined && HEX64.test(etag)) exp.sha256 = etag;
    // A 40-hex ETag on a file the hub serves itself (no redirect) is its git blob sha1.
    else if (exp.sha256 === undefined && chain.length === 1 && HEX40.test(etag)) exp.gitSha1 = etag;
  }
  return exp;
}

async function hashFile(path: string, h: Hash): Promise<void> {
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) h.update(chunk);
}

async function gitBlobSha1(path: string, size: number): Promise<string> {
  const h = createHash('sha1');
  h.update(`blob ${size}\0`);
  await hashFile(path, h);
  return h.digest('hex');
}

async function fileSize(path: string): Promise<number | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

interface Fetched extends ManifestFile {
  sha256: string;
}

class NotFound extends RustAsrError {}

/** One attempt: download (or resume) `file` into <file>.partial, verify, rename. */
async function fetchOnce(ctx: Ctx, file: string, known: Expected, resumeAllowed: boolean): Promise<Fetched & { resumed: boolean }> {
  const dest = join(ctx.dir, file);
  const partial = dest + PARTIAL_SUFFIX;
  let offset = resumeAllowed ? ((await fileSize(partial)) ?? 0) : 0;
  if (offset === 0 || (known.size !== undefined && offset > known.size)) {
    await rm(partial, { force: true });
    offset = 0;
  }
  if (offset > 0 && offset === known.size && known.sha256 !== undefined) {
    // A complete .partial (interrupted between the download and the rename): verify it locally.
    const h = createHash('sha256');
    await hashFile(partial, h);
    const digest = h.digest('hex');
    if (digest === known.sha256) {
      await syncFile(partial);
      await rename(partial, dest);
      await syncDir(ctx.dir);
      ctx.emit({ file, received: offset, total: offset });
      return { name: file, size: offset, sha256: digest, resumed: true };
    }
    await rm(partial, { force: true });
    offset = 0;
  }
  for (;;) {
    const headers = baseHeaders();
    if (offset > 0) headers['range'] = `bytes=${offset}-`;
    const r = await httpGet(resolveUrl(ctx, file), {
      headers,
      authorization: ctx.authorization,
      signal: ctx.signal,
      timeoutMs: ctx.timeoutMs,
      maxRedirects: MAX_REDIRECTS,
    });
    const commit = header(r.chain[0]?.headers ?? {}, 'x-repo-commit');
    if (ctx.commit === undefined && commit !== undefined && HEX40.test(commit)) ctx.commit = commit;
    const status = r.status;
    if (status === 416 && offset > 0) {
      // The partial is at least as long as the file: start over.
      r.res.resume();
      await rm(partial, { force: true });
      offset = 0;
      continue;
    }
    if (status === 401 || status === 403 || status === 404) {
      r.res.resume();
      const code = header(r.res.headers, 'x-error-code');
      const msg = header(r.res.headers, 'x-error-message');
      throw new NotFound(
        'MODEL_NOT_FOUND',
        `${ctx.repo.id}@${ctx.revision}: ${file}: HTTP ${status}${code ? ` ${code}` : ''}${msg ? ` (${msg})` : ''}` +
          (status !== 404 ? ' (private or gated repositories need HF_TOKEN)' : ''),
      );
    }
    if (status !== 200 && status !== 206) {
      r.res.resume();
      const err = new RustAsrError('DOWNLOAD_FAILED', `${ctx.repo.id}@${ctx.revision}: ${file}: HTTP ${status} from ${r.url.origin}`);
      throw status >= 500 || status === 408 || status === 429 ? retryable(err) : err;
    }
    let contentTotal: number | undefined;
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(r.res.headers, 'content-range') ?? '');
      if (offset === 0 || !m || Number(m[1]) !== offset) {
        // Not the range we asked for: drop the partial and download from scratch.
        r.res.destroy();
        await rm(partial, { force: true });
        offset = 0;
        continue;
      }
      if (m[3] !== '*') contentTotal = Number(m[3]);
    } else {
      if (offset > 0) offset = 0; // 200 to a Range request: the server restarts from byte 0
      const cl = header(r.res.headers, 'content-length');
      if (cl !== undefined && /^\d+$/.test(cl)) contentTotal = Number(cl);
    }
    const announced = expectedFromHeaders(r.chain);
    const size = known.size ?? announced.size ?? contentTotal;
    const sha256 = known.sha256 ?? announced.sha256;
    const gitSha1 = sha256 === undefined ? (known.gitSha1 ?? announced.gitSha1) : undefined;
    if (size !== undefined && contentTotal !== undefined && contentTotal !== size) {
      r.res.destroy();
      if (offset > 0) {
        // The partial belongs to another version of the file: start over.
        await rm(partial, { force: true });
        offset = 0;
        continue;
      }
      throw new RustAsrError(
        'CHECKSUM_MISMATCH',
        `${ctx.repo.id}@${ctx.revision}: ${file}: the server sends ${contentTotal} bytes, expected ${size}`,
      );
    }
    return await receive(ctx, file, r.res, { offset, size, sha256, gitSha1, partial, dest });
  }
}

async function receive(
  ctx: Ctx,
  file: string,
  body: NodeJS.ReadableStream & { destroy(err?: Error): void },
  o: { offset: number; size: number | undefined; sha256: string | undefined; gitSha1: string | undefined; partial: string; dest: string },
): Promise<Fetched & { resumed: boolean }> {
  const hash = createHash('sha256');
  if (o.offset > 0) await hashFile(o.partial, hash);
  let received = o.offset;
  ctx.emit({ file, received, total: o.size });
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      received += chunk.length;
      if (o.size !== undefined && received > o.size) {
        cb(new RustAsrError('CHECKSUM_MISMATCH', `${ctx.repo.id}@${ctx.revision}: ${file}: more than the expected ${o.size} bytes`));
        return;
      }
      hash.update(chunk);
      ctx.emit({ file, received, total: o.size });
      cb(null, chunk);
    },
  });
  try {
    await pipeline(body, counter, createWriteStream(o.partial, { flags: o.offset > 0 ? 'a' : 'w' }));
  } catch (err) {
    if (ctx.signal.aborted) throw abortedError();
    if (err instanceof RustAsrError) {
      if (err.code === 'CHECKSUM_MISMATCH') await rm(o.partial, { force: true });
      throw err;
    }
    if ((err as NodeJS.ErrnoException).syscall !== undefined && (err as NodeJS.ErrnoException).path !== undefined) {
      throw new RustAsrError('IO_ERROR', `writing ${o.partial}: ${(err as Error).message}`, { cause: err });
    }
    throw retryable(
      new RustAsrError('DOWNLOAD_FAILED', `${ctx.repo.id}@${ctx.revision}: ${file}: connection lost after ${received} bytes (${(err as Error).message}); the download resumes next time`, { cause: err }),
    );
  }
  if (o.size !== undefined && received !== o.size) {
    throw retryable(
      new RustAsrError('DOWNLOAD_FAILED', `${ctx.repo.id}@${ctx.revision}: ${file}: got ${received} of ${o.size} bytes; the download resumes next time`),
    );
  }
  const digest = hash.digest('hex');
  const resumed = o.offset > 0;
  let mismatch: string | undefined;
  if (o.sha256 !== undefined && digest !== o.sha256) mismatch = `sha256 ${digest}, expected ${o.sha256}`;
  else if (o.gitSha1 !== undefined) {
    const oid = await gitBlobSha1(o.partial, received);
    if (oid !== o.gitSha1) mismatch = `git blob sha1 ${oid}, expected ${o.gitSha1}`;
  }
  if (mismatch !== undefined) {
    await rm(o.partial, { force: true });
    const err = new RustAsrError('CHECKSUM_MISMATCH', `${ctx.repo.id}@${ctx.revision}: ${file}: ${mismatch}${resumed ? ' (resumed download)' : ''}; the file was deleted`);
    throw Object.assign(err, { resumed });
  }
  await syncFile(o.partial);
  await rename(o.partial, o.dest);
  await syncDir(ctx.dir);
  return { name: file, size: received, sha256: digest, resumed };
}

/**
 * Downloads one file with retries. Network failures, 5xx and truncated bodies are retried `ctx.retries`
 * times, resuming the .partial. A checksum mismatch on a resumed download is retried once from scratch
 * (the old .partial may predate a change of the file); on a fresh download it is final.
 */
async function fetchFile(ctx: Ctx, file: string, known: Expected): Promise<ManifestFile> {
  if (!isSafeFileName(file)) throw new RustAsrError('CORRUPT_WEIGHTS', `refusing unsafe file name ${JSON.stringify(file)}`);
  const dest = join(ctx.dir, file);
  const have = await fileSize(dest);
  if (have !== undefined && (known.size === undefined || have === known.size)) {
    // Files are renamed into place only after verification: a present file is a finished one.
    ctx.emit({ file, received: have, total: have });
    return { name: file, size: have, ...(known.sha256 ? { sha256: known.sha256 } : {}) };
  }
  let resumeAllowed = true;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetchOnce(ctx, file, known, resumeAllowed);
    } catch (err) {
      if (ctx.signal.aborted) throw abortedError();
      const e = err as RustAsrError & { resumed?: boolean };
      if (e.code === 'CHECKSUM_MISMATCH' && e.resumed === true && resumeAllowed) {
        resumeAllowed = false;
        continue;
      }
      if (!(err instanceof Error) || !RETRYABLE.has(err) || attempt >= ctx.retries) throw err;
      await sleep(Math.min(250 * 2 ** attempt, 4000), ctx.signal);
    }
  }
}

/** Reads and validates model.safetensors.index.json: the shard names, each a plain file name. */
async function shardNames(path: string): Promise<string[]> {
  let index: unknown;
  try {
    index = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new RustAsrError('CORRUPT_WEIGHTS', `${path}: not valid JSON`, { cause: err });
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (!map || typeof map !== 'object' || Array.isArray(map)) throw new RustAsrError('CORRUPT_WEIGHTS', `${path}: no weight_map object`);
  const names = new Set<string>();
  for (const v of Object.values(map as Record<string, unknown>)) {
    if (!isSafeFileName(v) || !v.endsWith('.safetensors')) {
      throw new RustAsrError('CORRUPT_WEIGHTS', `${path}: unsafe or invalid shard name ${JSON.stringify(v)} (plain *.safetensors file names only)`);
    }
    names.add(v);
  }
  if (names.size === 0) throw new RustAsrError('CORRUPT_WEIGHTS', `${path}: weight_map names no shard`);
  if (names.size > MAX_SHARDS) throw new RustAsrError('CORRUPT_WEIGHTS', `${path}: more than ${MAX_SHARDS} shards`);
  return [...names].sort();
}

async function downloadModel(s: Settings, signal: AbortSignal, emit: (p: DownloadProgress) => void): Promise<string> {
  const ctx: Ctx = { ...s, signal, emit, commit: undefined };
  try {
    await mkdir(s.dir, { recursive: true });
  } catch (err) {
    throw new RustAsrError('IO_ERROR', `cannot create ${s.dir}: ${(err as Error).message}`, { cause: err });
  }
  const release = await acquireLock(s.dir + LOCK_SUFFIX, signal);
  try {
    // Another process may have finished it while we waited for the lock.
    if (await completeManifest(s.dir)) return s.dir;
    const listing = await fetchListing(ctx);
    const files: ManifestFile[] = [];
    for (const f of MODEL_FILES) files.push(await fetchFile(ctx, f, listing?.get(f) ?? {}));

    const single = async () => files.push(await fetchFile(ctx, SINGLE_WEIGHTS, listing?.get(SINGLE_WEIGHTS) ?? {}));
    const sharded = async () => {
      files.push(await fetchFile(ctx, WEIGHTS_INDEX, listing?.get(WEIGHTS_INDEX) ?? {}));
      let shards: string[];
      try {
        shards = await shardNames(join(s.dir, WEIGHTS_INDEX));
      } catch (err) {
        await rm(join(s.dir, WEIGHTS_INDEX), { force: true });
        throw err;
      }
      for (const shard of shards) files.push(await fetchFile(ctx, shard, listing?.get(shard) ?? {}));
    };
    if (listing) {
      if (listing.has(SINGLE_WEIGHTS)) await single();
      else if (listing.has(WEIGHTS_INDEX)) await sharded();
      else throw new RustAsrError('MODEL_NOT_FOUND', `${s.repo.id}@${s.revision} has no ${SINGLE_WEIGHTS} or ${WEIGHTS_INDEX}`);
    } else {
      try {
        await single();
      } catch (err) {
        if (!(err instanceof NotFound)) throw err;
        await sharded();
      }
    }
    await writeManifest(s.dir, {
      version: 1,
      id: s.repo.id,
      revision: s.revision,
      ...(ctx.commit !== undefined ? { commit: ctx.commit } : {}),
      endpoint: s.endpoint,
      files,
      completedAt: new Date().toISOString(),
    });
    return s.dir;
  } finally {
    await release();
  }
}
