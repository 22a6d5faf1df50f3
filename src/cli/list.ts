// `rustasr list`: the models in the cache, complete or not (an interrupted download is listed as
// incomplete, with how to finish or remove it).
import type { Sade } from 'sade';

import { listCachedModels, type CachedModel } from '../hub/list.js';
import { report, usage } from './common.js';
import { formatBytes } from './progress.js';
import { str } from './pull.js';

export interface RunListOptions {
  cacheDir?: string;
  json?: boolean;
  out?: NodeJS.WritableStream;
}

/** Prints the cached models: a table, or a JSON array with --json. */
export async function runList(opts: RunListOptions = {}): Promise<CachedModel[]> {
  const out = opts.out ?? process.stdout;
  const models = await listCachedModels({ cacheDir: opts.cacheDir });
  if (opts.json) {
    out.write(JSON.stringify(models) + '\n');
    return models;
  }
  if (models.length === 0) {
    out.write('no cached models\n');
    return models;
  }
  const rows = models.map((m) => [m.id, m.revision, formatBytes(m.bytes), m.complete ? (m.verified ? 'complete' : 'complete (unverified)') : 'incomplete', m.dir]);
  const head = ['ID', 'REVISION', 'SIZE', 'STATUS', 'DIR'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  for (const r of [head, ...rows]) {
    out.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ') + '\n');
  }
  if (models.some((m) => !m.complete)) {
    out.write('incomplete: an interrupted download; `rustasr pull ID` finishes it, `rustasr rm ID` removes it\n');
  }
  return models;
}

/** Adds `list` to the rustasr CLI program. */
export function registerList(prog: Sade): Sade {
  prog
    .command('list')
    .describe('List the models in the cache (complete or incomplete).')
    .option('--cache-dir', 'Cache root (default: $RUSTASR_CACHE_DIR or ~/.cache/rustasr)')
    .option('--json', 'Print a JSON array', false)
    .action(async (flags: { 'cache-dir'?: unknown; json?: unknown }) => {
      try {
        if (flags['cache-dir'] === true || flags['cache-dir'] === '') usage('--cache-dir needs a value');
        await runList({ cacheDir: str(flags['cache-dir']), json: flags.json === true });
      } catch (err) {
        report(err);
      }
    });
  return prog;
}
