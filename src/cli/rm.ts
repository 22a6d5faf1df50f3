// `rustasr rm <id> [--revision R] | --all`: delete cached models (complete or incomplete). A revision that
// another process is downloading (its lock is held) is left alone with an error.
import { rm, rmdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Sade } from 'sade';

import { RustAsrError } from '../errors.js';
import { acquireLock, LOCK_SUFFIX } from '../hub/cache.js';
import { listCachedModels, type CachedModel } from '../hub/list.js';
import { report, usage } from './common.js';
import { formatBytes } from './progress.js';
import { str } from './pull.js';

export interface RunRmOptions {
  /** owner/name; omit with `all`. */
  id?: string;
  /** Only this revision (default: every revision of the id). */
  revision?: string;
  /** Every cached model. */
  all?: boolean;
  cacheDir?: string;
  /** How long to wait for a download in progress to release its lock (default 2000 ms). */
  lockWaitMs?: number;
  /** One line per removed entry (default: process.stdout); null for silence. */
  out?: NodeJS.WritableStream | null;
}

/** Removes the selected cache entries; returns what was removed. MODEL_NOT_FOUND when nothing matches. */
export async function runRm(opts: RunRmOptions): Promise<CachedModel[]> {
  if (opts.all && opts.id !== undefined) usage('rm: give a model id or --all, not both');
  if (!opts.all && opts.id === undefined) usage('rm: a model id (owner/name) or --all is required');
  const out = opts.out === undefined ? process.stdout : opts.out;
  const entries = (await listCachedModels({ cacheDir: opts.cacheDir })).filter(
    (m) => opts.all || (m.id === opts.id && (opts.revision === undefined || m.revision === opts.revision)),
  );
  if (entries.length === 0) {
    if (opts.all) return [];
    throw new RustAsrError('MODEL_NOT_FOUND', `${opts.id}${opts.revision ? ` (revision ${opts.revision})` : ''} is not in the cache; see \`rustasr list\``);
  }
  const removed: CachedModel[] = [];
  for (const m of entries) {
    let release: () => Promise<void>;
    try {
      release = await acquireLock(m.dir + LOCK_SUFFIX, AbortSignal.timeout(opts.lockWaitMs ?? 2000));
    } catch (err) {
      throw new RustAsrError('IO_ERROR', `${m.id} ${m.revision} is being downloaded by another process (${m.dir}${LOCK_SUFFIX}); try again when it is done`, { cause: err });
    }
    try {
      await rm(m.dir, { recursive: true, force: true });
    } finally {
      await release();
    }
    await rmdir(dirname(m.dir)).catch(() => undefined); // the repo folder, once its last revision is gone
    removed.push(m);
    out?.write(`removed ${m.id} ${m.revision} (${formatBytes(m.bytes)}${m.complete ? '' : ', incomplete'}) ${m.dir}\n`);
  }
  return removed;
}

/** Adds `rm` to the rustasr CLI program. */
export function registerRm(prog: Sade): Sade {
  prog
    .command('rm [id]')
    .describe('Delete a cached model (every revision, or --revision), complete or incomplete; --all deletes every cached model.')
    .option('--revision', 'Only this revision')
    .option('--all', 'Every cached model', false)
    .option('--cache-dir', 'Cache root (default: $RUSTASR_CACHE_DIR or ~/.cache/rustasr)')
    .example('rm Qwen/Qwen3-ASR-0.6B')
    .example('rm --all')
    .action(async (id: string | undefined, flags: { revision?: unknown; all?: unknown; 'cache-dir'?: unknown }) => {
      try {
        for (const f of ['revision', 'cache-dir'] as const) if (flags[f] === true || flags[f] === '') usage(`--${f} needs a value`);
        await runRm({ id: id === undefined ? undefined : String(id), revision: str(flags.revision), all: flags.all === true, cacheDir: str(flags['cache-dir']) });
      } catch (err) {
        report(err);
      }
    });
  return prog;
}
