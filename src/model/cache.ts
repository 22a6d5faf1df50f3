// The model cache: its location, the layout models/<owner>--<name>/<revision>/<file>, repo id and file name
// validation, the completion manifest and the cross-process lock.
import { hostname, homedir } from 'node:os';
import { open, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { RustAsrError } from '../errors.js';

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

export interface ManifestFile {
  name: string;
  size: number;
  /** sha256 of the file, when it was verified or computed during the download. */
  sha256?: string;
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
    const m = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as Partial<Manifest>;
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

/** The manifest when every file it lists is present with its recorded size (no hashing), else undefined. */
export async function completeManifest(dir: string): Promise<Manifest | undefined> {
  const m = await readManifest(dir);
  if (!m) return undefined;
  for (const f of m.files) {
    try {
      const st = await stat(join(dir, f.name));
      if (!st.isFile() || st.size !== f.size) return undefined;
    } catch {
      return undefined;
    }
  }
  return m;
}

export async function writeManifest(dir: string, m: Manifest): Promise<void> {
  const tmp = join(dir, `${MANIFEST_FILE}.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(m, null, 2) + '\n');
  await syncFile(tmp);
  await rename(tmp, join(dir, MANIFEST_FILE));
  await syncDir(dir);
}

export async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
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
    mtimeMs = (await stat(path)).mtimeMs;
    text = await readFile(path, 'utf8');
  } catch {
    return false; // vanished: the next open('wx') will tell
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
      const fh = await open(path, 'wx');
      try {
        await fh.writeFile(JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() }));
      } finally {
        await fh.close();
      }
      const timer = setInterval(() => {
        const now = new Date();
        utimes(path, now, now).catch(() => undefined);
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
      const aside = `${path}.stale.${process.pid}.${Date.now()}`;
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
