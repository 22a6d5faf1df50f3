// The model cache: its location, the layout models/<owner>--<name>/<revision>/<file>, repo id and file name
// validation, the completion manifest and the cross-process lock.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { hostname, homedir } from 'node:os';
import { lstat, lutimes, mkdir, open, rename, rm } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';

import { RustAsrError } from '../errors.js';
import { FILE_LIMITS, fileKind, readRegularFile } from './files.js';

/** Name of the manifest written into a revision directory once every file is downloaded and verified. */
export const MANIFEST_FILE = '.rustasr-manifest.json';
export const PARTIAL_SUFFIX = '.partial';
export const LOCK_SUFFIX = '.lock';

export interface CacheDirOptions {
  /** Cache root (default: $RUSTASR_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/rustasr). */
  cacheDir?: string;
}

/** Expands a leading `~` or `~/` to the home directory. */
export function expandHome(p: string): string {
  if (p === '~') return homedir();
  if (p.startsWith('~/') || p.startsWith('~\\')) return join(homedir(), p.slice(2));
  return p;
}

function envValue(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** The absolute cache root: opts.cacheDir ?? $RUSTASR_CACHE_DIR ?? ${XDG_CACHE_HOME ?? ~/.cache}/rustasr. */
export function resolveCacheDir(opts: CacheDirOptions = {}): string {
  const explicit = opts.cacheDir ?? envValue('RUSTASR_CACHE_DIR');
  if (explicit !== undefined) return resolve(expandHome(explicit));
  const xdg = envValue('XDG_CACHE_HOME');
  return resolve(xdg !== undefined ? expandHome(xdg) : join(homedir(), '.cache'), 'rustasr');
}

export function isTruthyEnv(name: string): boolean {
  const v = envValue(name)?.toLowerCase();
  return v === '1' || v === 'true' || v === 'yes' || v === 'on';
}

// ---------------------------------------------------------------------------------------- validation

// One part of a repo id, a revision, or a file name: starts with a letter or digit, then letters, digits, '.',
// '_' or '-'. Rules out '/', '\\', absolute paths, '.', '..', hidden names and anything URL-special.
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface RepoId {
  owner: string;
  name: string;
  /** owner/name */
  id: string;
}

function validSegment(s: string, max: number): boolean {
  return s.length <= max && SEGMENT.test(s) && !s.includes('..') && !s.endsWith('.');
}

/** True for a Hugging Face repo id this SDK accepts (`owner/name`, see parseRepoId). */
export function isRepoId(s: string): boolean {
  const parts = s.split('/');
  return (
    parts.length === 2 &&
    parts.every((p) => validSegment(p, 96) && !p.includes('--') && !p.endsWith('-'))
  );
}

/**
 * Parses `owner/name`. Each part: [A-Za-z0-9][A-Za-z0-9._-]*, at most 96 characters, no '..' or '--' (the
 * cache directory is `<owner>--<name>`, so '--' would be ambiguous; the hub forbids it too), not ending in
 * '.' or '-'. Anything else throws INVALID_OPTION.
 */
export function parseRepoId(s: string): RepoId {
  if (!isRepoId(s)) {
    throw new RustAsrError(
      'INVALID_OPTION',
      `${JSON.stringify(s)} is neither an existing model directory nor a Hugging Face repo id (owner/name)`,
    );
  }
  const [owner = '', name = ''] = s.split('/');
  return { owner, name, id: s };
}

/** A revision: a branch or tag name without '/', or a commit hash. Throws INVALID_OPTION otherwise. */
export function validateRevision(rev: string): string {
  if (!validSegment(rev, 255)) {
    throw new RustAsrError('INVALID_OPTION', `invalid revision ${JSON.stringify(rev)} (allowed: [A-Za-z0-9][A-Za-z0-9._-]*, no '..')`);
  }
  return rev;
}

/** A file name served by the hub that we store: a plain name, never a path (no '/', '\\', '..'). */
export function isSafeFileName(s: unknown): s is string {
  return (
    typeof s === 'string' &&
    validSegment(s, 255) &&
    !s.endsWith(PARTIAL_SUFFIX) &&
    !s.endsWith(LOCK_SUFFIX) &&
    s !== MANIFEST_FILE
  );
}

/** models/<owner>--<name>/<revision> under the cache root. */
export function revisionDir(cacheRoot: string, repo: RepoId, revision: string): string {
  return join(cacheRoot, 'models', `${repo.owner}--${repo.name}`, revision);
}

// ------------------------------------------------------------------------------------------ manifest

/**
 * How a downloaded file was checked: against the sha256 or the git blob sha1 the hub announced, against its
 * announced size only, or not at all (the hub announced neither: the file was only bounded by its cap).
 */
export type Verification = 'sha256' | 'git-sha1' | 'size' | 'none';

export interface ManifestFile {
  name: string;
  size: number;
  /** sha256 of the file, when it was verified or computed during the download. */
  sha256?: string;
  /** How the file was checked (absent in manifests written before this field existed). */
  verified?: Verification;
}

/** True when the file's bytes were checked against a hash the hub announced. */
export function hashVerified(f: ManifestFile): boolean {
  return f.verified === 'sha256' || f.verified === 'git-sha1';
}

export interface Manifest {
  version: 1;
  id: string;
  revision: string;
  /** The commit the revision pointed to, when the hub said (X-Repo-Commit or the API's sha). */
  commit?: string;
  endpoint: string;
  files: ManifestFile[];
  completedAt: string;
}

export async function readManifest(dir: string): Promise<Manifest | undefined> {
  try {
    // A regular file under its cap, never through a symlink (a FIFO or a link to /dev/zero is "no manifest").
    const bytes = await readRegularFile(join(dir, MANIFEST_FILE), {
      maxBytes: FILE_LIMITS.manifest,
      label: MANIFEST_FILE,
      tooLargeCode: 'IO_ERROR',
      noFollow: true,
    });
    if (bytes === undefined) return undefined;
    const m = JSON.parse(bytes.toString('utf8')) as Partial<Manifest>;
    if (m.version !== 1 || !Array.isArray(m.files) || typeof m.id !== 'string' || typeof m.revision !== 'string') return undefined;
    for (const f of m.files as unknown[]) {
      const e = f as Partial<ManifestFile> | null;
      if (!e || !isSafeFileName(e.name) || typeof e.size !== 'number') return undefined;
    }
    return m as Manifest;
  } catch {
    return undefined;
  }
}

/**
 * The manifest when every file it lists is present, a regular file (not a symlink) with its recorded size
 * (no hashing), else undefined.
 */
export async function completeManifest(dir: string): Promise<Manifest | undefined> {
  const m = await readManifest(dir);
  if (!m) return undefined;
  for (const f of m.files) {
    try {
      const st = await lstat(join(dir, f.name));
      if (!st.isFile() || st.size !== f.size) return undefined;
    } catch {
      return undefined;
    }
  }
  return m;
}

/** open() flags of a file the cache creates: exclusive (never an existing file or a planted symlink). */
export const CREATE_EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** A fresh, unguessable temporary name in `dir` for `base`. */
export function privateTempName(dir: string, base: string): string {
  return join(dir, `${base}.${process.pid}.${randomBytes(8).toString('hex')}.tmp`);
}

export async function writeManifest(dir: string, m: Manifest): Promise<void> {
  // Created exclusively under a private name (no symlink or file planted in the cache is ever written
  // through), flushed, then renamed into place.
  const tmp = privateTempName(dir, MANIFEST_FILE);
  const fh = await open(tmp, CREATE_EXCLUSIVE, 0o644);
  try {
    await fh.writeFile(JSON.stringify(m, null, 2) + '\n');
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, join(dir, MANIFEST_FILE));
  await syncDir(dir);
}

/**
 * Creates the cache's directories down to `dir` (a path under `root`): the root as the user named it (it
 * may be a symlink), then every component below it, each of which must be a real directory. A symlink (or
 * anything else) in their place is never followed: IO_ERROR, nothing is written.
 */
export async function makeCacheDirs(root: string, dir: string): Promise<void> {
  const rel = relative(root, dir);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new RustAsrError('INTERNAL', `${dir} is not under the cache root ${root}`);
  try {
    await mkdir(root, { recursive: true });
  } catch (err) {
    throw new RustAsrError('IO_ERROR', `cannot create ${root}: ${(err as Error).message}`, { cause: err });
  }
  let cur = root;
  for (const part of rel.split(sep)) {
    cur = join(cur, part);
    try {
      await mkdir(cur);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new RustAsrError('IO_ERROR', `cannot create ${cur}: ${(err as Error).message}`, { cause: err });
      }
    }
    await checkCacheDir(cur);
  }
}

/** IO_ERROR unless `p` is a real directory (lstat: a symlink is refused, not followed). */
async function checkCacheDir(p: string): Promise<void> {
  let st;
  try {
    st = await lstat(p);
  } catch (err) {
    throw new RustAsrError('IO_ERROR', `cannot stat ${p}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isDirectory() || st.isSymbolicLink()) {
    throw new RustAsrError('IO_ERROR', `refusing to use ${p}: it is ${fileKind(st)}, not a directory (the cache never follows symbolic links below its root)`);
  }
}

/**
 * True when every component of `dir` below `root` exists as a real directory; false when one is missing;
 * IO_ERROR when one is a symlink or not a directory.
 */
export async function cacheDirsExist(root: string, dir: string): Promise<boolean> {
  let cur = root;
  for (const part of relative(root, dir).split(sep)) {
    cur = join(cur, part);
    try {
      await lstat(cur);
    } catch {
      return false;
    }
    await checkCacheDir(cur);
  }
  return true;
}

/** fsyncs a file given by path (opened without following a symlink). */
export async function syncFile(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsyncs a directory so a rename in it is durable (best effort: not supported everywhere). */
export async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Windows and some file systems cannot fsync a directory.
  }
}

// ---------------------------------------------------------------------------------------------- lock

/** A lock not refreshed for this long is considered abandoned. */
const LOCK_STALE_MS = 60_000;
const LOCK_REFRESH_MS = 10_000;
const LOCK_POLL_MS = 200;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function lockIsStale(path: string): Promise<boolean> {
  let mtimeMs: number;
  let text: string;
  try {
    const st = await lstat(path);
    // Only a regular file is a lock; a symlink, FIFO or directory planted in its place is broken at once
    // (moved aside, never followed or read).
    if (!st.isFile()) return true;
    mtimeMs = st.mtimeMs;
    const bytes = await readRegularFile(path, { maxBytes: FILE_LIMITS.lock, label: 'a lock file', tooLargeCode: 'IO_ERROR', noFollow: true });
    if (bytes === undefined) return false; // vanished: the next open('wx') will tell
    text = bytes.toString('utf8');
  } catch (err) {
    // Over the cap or swapped for something else while we looked: not a lock of ours.
    return err instanceof RustAsrError;
  }
  if (Date.now() - mtimeMs > LOCK_STALE_MS) return true;
  try {
    const info = JSON.parse(text) as { pid?: unknown; host?: unknown };
    if (typeof info.pid === 'number' && info.host === hostname()) return !pidAlive(info.pid);
  } catch {
    // being written right now, or garbage younger than LOCK_STALE_MS: wait
  }
  return false;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolveSleep, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(new RustAsrError('ABORTED', 'download aborted'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolveSleep();
    }, ms);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export { sleep };

/**
 * Takes an exclusive lock file (created with O_EXCL, holding {pid, host}), waiting while another live
 * process holds it. A lock whose process is gone (same host) or that was not refreshed for 60 s is broken.
 * Best effort: it keeps two processes from downloading the same files at once, it is not a mutex for
 * adversarial use. Returns the release function.
 */
export async function acquireLock(path: string, signal?: AbortSignal): Promise<() => Promise<void>> {
  for (;;) {
    try {
      const fh = await open(path, CREATE_EXCLUSIVE, 0o644);
      try {
        await fh.writeFile(JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() }));
      } finally {
        await fh.close();
      }
      const timer = setInterval(() => {
        const now = new Date();
        lutimes(path, now, now).catch(() => undefined); // never touches what a planted symlink points to
      }, LOCK_REFRESH_MS);
      timer.unref();
      return async () => {
        clearInterval(timer);
        await rm(path, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new RustAsrError('IO_ERROR', `cannot create lock ${path}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (await lockIsStale(path)) {
      // Move it aside atomically so that only one waiter breaks a given stale lock.
      const aside = `${path}.stale.${process.pid}.${randomBytes(6).toString('hex')}`;
      try {
        await rename(path, aside);
        await rm(aside, { force: true });
      } catch {
        // someone else broke or released it
      }
      continue;
    }
    await sleep(LOCK_POLL_MS, signal);
  }
}
