// listCachedModels(): the models in the cache (models/<owner>--<name>/<revision>), complete or not.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { completeManifest, hashVerified, readManifest, resolveCacheDir, type CacheDirOptions } from './cache.js';

export interface CachedModel {
  /** Hugging Face repo id, owner/name. */
  id: string;
  revision: string;
  /** Absolute path of the model directory (what resolveModel returns). */
  dir: string;
  /** Bytes on disk in the directory, including unfinished .partial files. */
  bytes: number;
  /** True when the download finished: the manifest is there and every file it lists has its size. */
  complete: boolean;
  /**
   * True when every file of a complete download was checked against a hash the hub announced (sha256 or
   * git blob sha1); false when some file was checked by size only or not at all (see the manifest's
   * `verified` per file), and for incomplete downloads.
   */
  verified: boolean;
  /** The commit the revision resolved to at download time, when known. */
  commit?: string;
}

async function subdirs(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch {
    return [];
  }
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.isFile()) continue;
    try {
      total += (await stat(join(dir, e.name))).size;
    } catch {
      // removed meanwhile
    }
  }
  return total;
}

/** Lists the cached models, sorted by id then revision. */
export async function listCachedModels(opts: CacheDirOptions = {}): Promise<CachedModel[]> {
  const modelsDir = join(resolveCacheDir(opts), 'models');
  const out: CachedModel[] = [];
  for (const repoDir of await subdirs(modelsDir)) {
    const sep = repoDir.indexOf('--');
    if (sep <= 0) continue;
    const fallbackId = `${repoDir.slice(0, sep)}/${repoDir.slice(sep + 2)}`;
    for (const revision of await subdirs(join(modelsDir, repoDir))) {
      const dir = join(modelsDir, repoDir, revision);
      const manifest = await readManifest(dir);
      const complete = manifest !== undefined && (await completeManifest(dir)) !== undefined;
      let bytes = 0;
      try {
        bytes = await dirBytes(dir);
      } catch {
        continue;
      }
      out.push({
        id: manifest?.id ?? fallbackId,
        revision,
        dir,
        bytes,
        complete,
        verified: complete && manifest !== undefined && manifest.files.every(hashVerified),
        ...(manifest?.commit !== undefined ? { commit: manifest.commit } : {}),
      });
    }
  }
  return out.sort((a, b) => (a.id === b.id ? a.revision.localeCompare(b.revision) : a.id.localeCompare(b.id)));
}
