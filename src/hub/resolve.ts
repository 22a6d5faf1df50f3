// resolveModel(): a local model directory, or a Hugging Face repo id downloaded into (or found in) the cache.
//
// Downloads go to <file>.partial, are verified (size, and sha256 or the git blob sha1 when the hub says which),
// fsynced and renamed into place; an interrupted .partial is resumed with a Range request. Once every file is
// in place a manifest is written: a revision directory with a complete manifest resolves with no network.
// See docs/models.md.
import { createHash, type Hash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { RustAsrError } from '../errors.js';
import {
  LOCK_SUFFIX,
  PARTIAL_SUFFIX,
  acquireLock,
  cacheDirsExist,
  completeManifest,
  expandHome,
  hashVerified,
  isSafeFileName,
  isTruthyEnv,
  makeCacheDirs,
  parseRepoId,
  resolveCacheDir,
  revisionDir,
  sleep,
  syncDir,
  validateRevision,
  writeManifest,
  type ManifestFile,
  type RepoId,
  type Verification,
} from './cache.js';
import { FILE_LIMITS, notUtf8Hint, readRegularFile, showPath } from './files.js';
import { RETRYABLE, SpeedGuard, abortedError, discardBody, header, httpGet, readBody, retryable, type HopInfo, type SpeedRule } from './http.js';

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
  /**
   * Socket idle timeout in ms (default 30000). It is also the time a response's headers may take, and the
   * window of the minimum-speed rule.
   */
  timeoutMs?: number;
  /**
   * Minimum speed of a transfer in bytes/s, averaged over each `timeoutMs` window (default 1024; 0 turns
   * the rule off). A slower transfer fails like a dropped connection (retried, resuming the .partial).
   */
  minBytesPerSecond?: number;
  /**
   * Overall deadline of this call in ms, lock waits, retries and every file included (default: none). When
   * it passes, the call rejects with DOWNLOAD_FAILED and the download stops (once no other caller waits
   * for it), keeping the .partial files for a later resume. `rustasr pull --timeout SECONDS` sets it.
   */
  deadlineMs?: number;
  /**
   * Largest accepted weights file (*.safetensors) when the hub announces no size for it (default 32 GiB).
   * Files with an announced size are held to it; the other files have a fixed 16 MiB cap
   * (docs/errors.md).
   */
  maxWeightsBytes?: number;
}

/** Default of ResolveModelOptions.minBytesPerSecond. */
export const DEFAULT_MIN_BYTES_PER_SECOND = 1024;
/** Default of ResolveModelOptions.maxWeightsBytes: 32 GiB (Qwen3-ASR-1.7B is 4.7 GB). */
export const DEFAULT_MAX_WEIGHTS_BYTES = 32 * 1024 ** 3;

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
/** The Node warning emitted when a download completed with files no announced hash could check. */
export const UNVERIFIED_DOWNLOAD_WARNING = Object.freeze({ type: 'RustasrWarning', code: 'RUSTASR_UNVERIFIED_DOWNLOAD' });
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
/** The hub's file listing (API response). */
const MAX_LISTING_BYTES = 32 << 20;
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
  if (opts.minBytesPerSecond !== undefined && !(opts.minBytesPerSecond >= 0 && Number.isFinite(opts.minBytesPerSecond))) {
    throw new RustAsrError('INVALID_OPTION', `minBytesPerSecond must be a non-negative number, got ${String(opts.minBytesPerSecond)}`);
  }
  if (opts.deadlineMs !== undefined && !(opts.deadlineMs > 0 && opts.deadlineMs <= 2 ** 31 - 1)) {
    throw new RustAsrError('INVALID_OPTION', `deadlineMs must be a positive number of milliseconds (at most 2^31 - 1), got ${String(opts.deadlineMs)}`);
  }
  if (opts.maxWeightsBytes !== undefined && !(Number.isSafeInteger(opts.maxWeightsBytes) && opts.maxWeightsBytes > 0)) {
    throw new RustAsrError('INVALID_OPTION', `maxWeightsBytes must be a positive integer, got ${String(opts.maxWeightsBytes)}`);
  }
  const root = resolveCacheDir(opts);
  const dir = revisionDir(root, repo, revision);
  // A cached copy is used only through real directories (a symlink below the cache root is IO_ERROR).
  if ((await cacheDirsExist(root, dir)) && (await completeManifest(dir))) return dir;
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
    root,
    dir,
    endpoint,
    authorization: token ? { origin: new URL(endpoint).origin, value: `Bearer ${token}` } : undefined,
    retries: opts.retries ?? 2,
    timeoutMs: opts.timeoutMs ?? 30_000,
    minBytesPerSecond: opts.minBytesPerSecond ?? DEFAULT_MIN_BYTES_PER_SECOND,
    maxWeightsBytes: opts.maxWeightsBytes ?? DEFAULT_MAX_WEIGHTS_BYTES,
  };
  return joinDownload(dir, (signal, emit) => downloadModel(settings, signal, emit), opts, `${repo.id}@${revision}`);
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

/**
 * Joins the in-flight download of `key` (or starts it); progress goes to every waiting caller. A caller
 * leaves on its signal (ABORTED) or its deadline (DOWNLOAD_FAILED); the last one to leave stops the download.
 */
function joinDownload(
  key: string,
  start: (signal: AbortSignal, emit: (p: DownloadProgress) => void) => Promise<string>,
  opts: ResolveModelOptions,
  what: string,
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
  const deadlineMs = opts.deadlineMs;
  return new Promise<string>((resolveJoin, rejectJoin) => {
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = () => {
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      active.subscribers.delete(sub);
    };
    const leave = (error: () => RustAsrError) => {
      if (settled) return;
      finish();
      if (active.subscribers.size === 0) {
        // The last caller stops the download; it rejects once the download has cleaned up (lock released,
        // files closed), so that a retry right after the rejection finds a consistent cache.
        if (jobs.get(key) === active) jobs.delete(key);
        active.controller.abort();
        active.promise.then(
          () => rejectJoin(error()),
          () => rejectJoin(error()),
        );
        return;
      }
      rejectJoin(error());
    };
    const onAbort = () => leave(abortedError);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (deadlineMs !== undefined) {
      timer = setTimeout(
        () =>
          leave(
            () =>
              new RustAsrError(
                'DOWNLOAD_FAILED',
                `${what}: not finished within the ${deadlineMs} ms deadline; the .partial files are kept and the download resumes next time`,
              ),
          ),
        deadlineMs,
      );
    }
    active.promise.then(
      (v) => {
        if (settled) return;
        finish();
        resolveJoin(v);
      },
      (err: unknown) => {
        if (settled) return;
        finish();
        rejectJoin(err);
      },
    );
  });
}

// ----------------------------------------------------------------------------------------- download

interface Settings {
  repo: RepoId;
  revision: string;
  /** The cache root. */
  root: string;
  dir: string;
  endpoint: string;
  authorization: { origin: string; value: string } | undefined;
  retries: number;
  timeoutMs: number;
  minBytesPerSecond: number;
  maxWeightsBytes: number;
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
      discardBody(r.res);
      return undefined;
    }
    body = await readBody(r.res, MAX_LISTING_BYTES, ctx.signal, speedRule(ctx));
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

function speedRule(ctx: Settings): SpeedRule {
  return { minBytesPerSecond: ctx.minBytesPerSecond, windowMs: ctx.timeoutMs };
}

/** The size cap of `file` when the hub announces no size (weights: ctx.maxWeightsBytes). */
function capFor(ctx: Settings, file: string): number {
  if (file.endsWith('.safetensors')) return ctx.maxWeightsBytes;
  if (file === WEIGHTS_INDEX) return FILE_LIMITS.index;
  if (file === 'vocab.json' || file === 'merges.txt') return FILE_LIMITS.tokenizer;
  return FILE_LIMITS.json; // config.json, preprocessor_config.json, generation_config.json, ...
}

/**
 * Opens a file of the cache for reading: a regular file only, never through a symlink (O_NOFOLLOW), never
 * blocking on a FIFO (O_NONBLOCK). Undefined when it is absent or anything else.
 */
async function openCacheFile(path: string, flags = constants.O_RDONLY): Promise<FileHandle | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    return undefined;
  }
  return fh;
}

/** Feeds the first `n` bytes of an open file to the hashes. */
async function hashHandle(fh: FileHandle, n: number, ...hashes: Hash[]): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(Math.max(n, 1), 1 << 20));
  for (let pos = 0; pos < n; ) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, n - pos), pos);
    if (bytesRead === 0) throw new RustAsrError('IO_ERROR', `a cache file shrank while being hashed (${pos} of ${n} bytes)`);
    for (const h of hashes) h.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

function gitBlobHash(size: number): Hash {
  return createHash('sha1').update(`blob ${size}\0`);
}

/**
 * Size of a regular file of the cache (lstat: a symlink is not one), else undefined. Anything else in its
 * place (a symlink, a FIFO, a directory) is removed when `removeOther` (a symlink itself, never its target).
 */
async function cacheFileSize(path: string, removeOther: boolean): Promise<number | undefined> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return undefined;
  }
  if (st.isFile()) return st.size;
  if (removeOther && !st.isDirectory()) await rm(path, { force: true });
  return undefined;
}

/**
 * Renames the finished `partial` (still open as `fh`) to `dest`, then checks that `dest` is that very file:
 * had the .partial been swapped (for a symlink, say) between the close and the rename, the swapped-in entry
 * is removed and the download fails.
 */
async function commitPartial(fh: FileHandle, partial: string, dest: string, dir: string): Promise<void> {
  await fh.sync();
  const mine = await fh.stat();
  await fh.close();
  await rename(partial, dest);
  const st = await lstat(dest).catch(() => undefined);
  if (!st || !st.isFile() || st.ino !== mine.ino || st.dev !== mine.dev) {
    await rm(dest, { force: true });
    throw new RustAsrError('IO_ERROR', `${partial} was replaced by something else while it was renamed to ${dest}; refusing it`);
  }
  await syncDir(dir);
}

interface Fetched extends ManifestFile {
  sha256: string;
  verified: Verification;
}

class NotFound extends RustAsrError {}

function verificationOf(sha256: string | undefined, gitSha1: string | undefined, size: number | undefined): Verification {
  if (sha256 !== undefined) return 'sha256';
  if (gitSha1 !== undefined) return 'git-sha1';
  return size !== undefined ? 'size' : 'none';
}

/**
 * Opens the existing .partial for resuming: a regular file (not a symlink: O_NOFOLLOW), with one link (not
 * a hard link to a file elsewhere), owned by this user, of `size` bytes. Anything else is removed (a
 * symlink itself, never its target) and undefined returned: the download starts over.
 */
async function openPartialForResume(partial: string, size: number): Promise<FileHandle | undefined> {
  const fh = await openCacheFile(partial, constants.O_RDWR);
  if (fh) {
    const st = await fh.stat();
    const uid = process.getuid?.();
    if (st.nlink === 1 && st.size === size && (uid === undefined || st.uid === uid)) return fh;
    await fh.close();
  }
  await rm(partial, { force: true });
  return undefined;
}

/**
 * A Writable writing at `start` onwards through `fh` (positional writes). Not fh.createWriteStream: a
 * stream on a FileHandle keeps a reference that makes fh.close() wait forever unless the stream closes
 * the handle itself, and the handle must stay open until the file is verified and renamed.
 */
function handleWriter(fh: FileHandle, start: number): Writable {
  let pos = start;
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      (async () => {
        for (let off = 0; off < chunk.length; ) {
          const { bytesWritten } = await fh.write(chunk, off, chunk.length - off, pos);
          off += bytesWritten;
          pos += bytesWritten;
        }
      })().then(() => cb(), cb);
    },
  });
}

/** Creates the .partial afresh: exclusively (O_EXCL | O_NOFOLLOW), after removing whatever had the name. */
async function createPartial(partial: string): Promise<FileHandle> {
  await rm(partial, { force: true });
  try {
    return await open(partial, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  } catch (err) {
    throw new RustAsrError('IO_ERROR', `cannot create ${partial}: ${(err as Error).message}`, { cause: err });
  }
}

/** One attempt: download (or resume) `file` into <file>.partial, verify, rename. */
async function fetchOnce(ctx: Ctx, file: string, known: Expected, resumeAllowed: boolean): Promise<Fetched & { resumed: boolean }> {
  const dest = join(ctx.dir, file);
  const partial = dest + PARTIAL_SUFFIX;
  const cap = capFor(ctx, file);
  if (known.size !== undefined && known.size > cap && !file.endsWith('.safetensors')) {
    throw new RustAsrError('DOWNLOAD_FAILED', `${ctx.repo.id}@${ctx.revision}: ${file}: the hub lists ${known.size} bytes, over the ${cap}-byte limit for this file`);
  }
  let offset = resumeAllowed ? ((await cacheFileSize(partial, true)) ?? 0) : 0;
  if (offset === 0 || (known.size !== undefined && offset > known.size) || offset > cap) {
    await rm(partial, { force: true });
    offset = 0;
  }
  if (offset > 0 && offset === known.size && known.sha256 !== undefined) {
    // A complete .partial (interrupted between the download and the rename): verify it locally.
    const fh = await openPartialForResume(partial, offset);
    if (fh) {
      const h = createHash('sha256');
      let digest: string | undefined;
      try {
        await hashHandle(fh, offset, h);
        digest = h.digest('hex');
      } catch {
        // unreadable: download it again
      }
      if (digest === known.sha256) {
        await commitPartial(fh, partial, dest, ctx.dir);
        ctx.emit({ file, received: offset, total: offset });
        return { name: file, size: offset, sha256: digest, verified: 'sha256', resumed: true };
      }
      await fh.close();
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
      discardBody(r.res);
      await rm(partial, { force: true });
      offset = 0;
      continue;
    }
    if (status === 401 || status === 403 || status === 404) {
      discardBody(r.res);
      const code = header(r.res.headers, 'x-error-code');
      const msg = header(r.res.headers, 'x-error-message');
      throw new NotFound(
        'MODEL_NOT_FOUND',
        `${ctx.repo.id}@${ctx.revision}: ${file}: HTTP ${status}${code ? ` ${code}` : ''}${msg ? ` (${msg})` : ''}` +
          (status !== 404 ? ' (private or gated repositories need HF_TOKEN)' : ''),
      );
    }
    if (status !== 200 && status !== 206) {
      discardBody(r.res);
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
    if (size !== undefined && size > cap && !file.endsWith('.safetensors')) {
      r.res.destroy();
      throw new RustAsrError('DOWNLOAD_FAILED', `${ctx.repo.id}@${ctx.revision}: ${file}: the server announces ${size} bytes, over the ${cap}-byte limit for this file`);
    }
    let fh: FileHandle | undefined;
    if (offset > 0) {
      fh = await openPartialForResume(partial, offset);
      if (!fh) {
        // The .partial changed since it was measured: start over.
        r.res.destroy();
        offset = 0;
        continue;
      }
    } else {
      fh = await createPartial(partial);
    }
    return await receive(ctx, file, r.res, fh, { offset, size, cap, sha256, gitSha1, partial, dest });
  }
}

async function receive(
  ctx: Ctx,
  file: string,
  body: NodeJS.ReadableStream & { destroy(err?: Error): void },
  fh: FileHandle,
  o: { offset: number; size: number | undefined; cap: number; sha256: string | undefined; gitSha1: string | undefined; partial: string; dest: string },
): Promise<Fetched & { resumed: boolean }> {
  const what = `${ctx.repo.id}@${ctx.revision}: ${file}`;
  let isOpen = true;
  const discard = async () => {
    if (isOpen) {
      isOpen = false;
      await fh.close().catch(() => undefined);
    }
    await rm(o.partial, { force: true });
  };
  const hash = createHash('sha256');
  let received = o.offset;
  let overCap = false;
  let guard: SpeedGuard | undefined;
  try {
    if (o.offset > 0) await hashHandle(fh, o.offset, hash);
    ctx.emit({ file, received, total: o.size });
    guard = new SpeedGuard(speedRule(ctx), (why) =>
      body.destroy(retryable(new RustAsrError('DOWNLOAD_FAILED', `${what}: too slow after ${received} bytes (${why}); the download resumes next time`))),
    );
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        guard?.add(chunk.length);
        if (o.size !== undefined && received > o.size) {
          cb(new RustAsrError('CHECKSUM_MISMATCH', `${what}: more than the expected ${o.size} bytes`));
          return;
        }
        if (received > o.cap) {
          overCap = true;
          cb(
            new RustAsrError(
              'DOWNLOAD_FAILED',
              `${what}: the hub announced no size and sent more than the ${o.cap}-byte limit for this file` +
                (file.endsWith('.safetensors') ? ' (raise maxWeightsBytes if the file is really that large)' : ''),
            ),
          );
          return;
        }
        hash.update(chunk);
        ctx.emit({ file, received, total: o.size });
        cb(null, chunk);
      },
    });
    await pipeline(body, counter, handleWriter(fh, o.offset));
  } catch (err) {
    if (ctx.signal.aborted) {
      isOpen = false;
      await fh.close().catch(() => undefined);
      throw abortedError();
    }
    if (err instanceof RustAsrError) {
      if (err.code === 'CHECKSUM_MISMATCH' || overCap) await discard();
      else if (isOpen) {
        isOpen = false;
        await fh.close().catch(() => undefined);
      }
      throw err;
    }
    isOpen = false;
    await fh.close().catch(() => undefined);
    if ((err as NodeJS.ErrnoException).syscall !== undefined) {
      throw new RustAsrError('IO_ERROR', `writing ${o.partial}: ${(err as Error).message}`, { cause: err });
    }
    throw retryable(
      new RustAsrError('DOWNLOAD_FAILED', `${what}: connection lost after ${received} bytes (${(err as Error).message}); the download resumes next time`, { cause: err }),
    );
  } finally {
    guard?.stop();
  }
  if (o.size !== undefined && received !== o.size) {
    isOpen = false;
    await fh.close().catch(() => undefined);
    throw retryable(new RustAsrError('DOWNLOAD_FAILED', `${what}: got ${received} of ${o.size} bytes; the download resumes next time`));
  }
  const digest = hash.digest('hex');
  const resumed = o.offset > 0;
  let mismatch: string | undefined;
  if (o.sha256 !== undefined && digest !== o.sha256) mismatch = `sha256 ${digest}, expected ${o.sha256}`;
  else if (o.gitSha1 !== undefined) {
    const h = gitBlobHash(received);
    await hashHandle(fh, received, h);
    const oid = h.digest('hex');
    if (oid !== o.gitSha1) mismatch = `git blob sha1 ${oid}, expected ${o.gitSha1}`;
  }
  if (mismatch !== undefined) {
    await discard();
    const err = new RustAsrError('CHECKSUM_MISMATCH', `${what}: ${mismatch}${resumed ? ' (resumed download)' : ''}; the file was deleted`);
    throw Object.assign(err, { resumed });
  }
  isOpen = false;
  await commitPartial(fh, o.partial, o.dest, ctx.dir);
  return { name: file, size: received, sha256: digest, verified: verificationOf(o.sha256, o.gitSha1, o.size), resumed };
}

/**
 * A file already in place (renamed there after an earlier download): re-checked against what the hub says
 * now (size, and the hash when one is known) before it is kept. Undefined when it must be downloaded.
 */
async function keepPresent(ctx: Ctx, file: string, known: Expected): Promise<Fetched | undefined> {
  const dest = join(ctx.dir, file);
  const have = await cacheFileSize(dest, true);
  if (have === undefined || (known.size !== undefined && have !== known.size) || have > capFor(ctx, file)) return undefined;
  const fh = await openCacheFile(dest);
  if (!fh) return undefined;
  try {
    const sha = createHash('sha256');
    const git = known.sha256 === undefined && known.gitSha1 !== undefined ? gitBlobHash(have) : undefined;
    await hashHandle(fh, have, ...(git ? [sha, git] : [sha]));
    const digest = sha.digest('hex');
    if (known.sha256 !== undefined && digest !== known.sha256) return undefined;
    if (git && git.digest('hex') !== known.gitSha1) return undefined;
    ctx.emit({ file, received: have, total: have });
    return { name: file, size: have, sha256: digest, verified: verificationOf(known.sha256, git ? known.gitSha1 : undefined, known.size) };
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}

/**
 * Downloads one file with retries. Network failures, 5xx, truncated bodies and too-slow transfers are
 * retried `ctx.retries` times, resuming the .partial. A checksum mismatch on a resumed download is retried
 * once from scratch (the old .partial may predate a change of the file); on a fresh download it is final.
 */
async function fetchFile(ctx: Ctx, file: string, known: Expected): Promise<Fetched> {
  if (!isSafeFileName(file)) throw new RustAsrError('CORRUPT_WEIGHTS', `refusing unsafe file name ${JSON.stringify(file)}`);
  const present = await keepPresent(ctx, file, known);
  if (present) return present;
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
    const bytes = await readRegularFile(path, { maxBytes: FILE_LIMITS.index, label: WEIGHTS_INDEX, tooLargeCode: 'CORRUPT_WEIGHTS', noFollow: true });
    index = JSON.parse((bytes ?? Buffer.alloc(0)).toString('utf8'));
  } catch (err) {
    if (err instanceof RustAsrError) throw err;
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
  // Real directories only below the cache root: a symlink planted there is IO_ERROR, never written through.
  await makeCacheDirs(s.root, s.dir);
  const release = await acquireLock(s.dir + LOCK_SUFFIX, signal);
  try {
    // Another process may have finished it while we waited for the lock.
    if (await completeManifest(s.dir)) return s.dir;
    const listing = await fetchListing(ctx);
    const files: Fetched[] = [];
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
    const unverified = files.filter((f) => !hashVerified(f)).map((f) => `${f.name} (${f.verified === 'size' ? 'size only' : 'unchecked'})`);
    if (unverified.length > 0) {
      process.emitWarning(
        `${s.repo.id}@${s.revision}: the hub announced no hash for ${unverified.join(', ')}; recorded as unverified in the manifest`,
        UNVERIFIED_DOWNLOAD_WARNING,
      );
    }
    return s.dir;
  } finally {
    await release();
  }
}
