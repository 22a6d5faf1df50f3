// `rustasr pull <id>` and `rustasr list`: download a Hugging Face model into the cache, list the cache.
import type { Sade } from 'sade';

import { RustAsrError } from '../errors.js';
import { listCachedModels, type CachedModel } from '../model/list.js';
import { resolveModel, type DownloadProgress } from '../model/resolve.js';

// Same values as EXIT_FAILURE / EXIT_USAGE in ./index.ts (not imported: index.ts imports this module).
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

export interface RunPullOptions {
  id: string;
  revision?: string;
  cacheDir?: string;
  endpoint?: string;
  offline?: boolean;
  /** Overall deadline in seconds (`--timeout`); none by default. */
  timeoutSeconds?: number;
  signal?: AbortSignal;
  /** The model directory is printed here (default: process.stdout); null for silence. */
  out?: NodeJS.WritableStream | null;
  /** Progress goes here (default: process.stderr): a bar on a TTY, one line per file otherwise; null for silence. */
  log?: NodeJS.WritableStream | null;
}

export interface RunListOptions {
  cacheDir?: string;
  json?: boolean;
  out?: NodeJS.WritableStream;
}

function usage(message: string): never {
  throw new RustAsrError('INVALID_OPTION', message);
}

/** 1234567 -> "1.2 MB". */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v} ${units[i]}` : `${v.toFixed(1)} ${units[i]}`;
}

/** A progress printer: a redrawn bar on a TTY (throttled), otherwise one line per finished file. */
export function pullProgressPrinter(log: NodeJS.WritableStream): { onProgress: (p: DownloadProgress) => void; end: () => void } {
  const tty = (log as { isTTY?: boolean }).isTTY === true;
  let current: DownloadProgress | undefined;
  let lastDraw = 0;
  const width = 30;
  const line = (p: DownloadProgress) => {
    if (p.total === undefined || p.total === 0) return `${p.file} ${formatBytes(p.received)}`;
    const frac = Math.min(1, p.received / p.total);
    const filled = Math.round(frac * width);
    return `${p.file} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(p.received)} / ${formatBytes(p.total)}`;
  };
  const finish = () => {
    if (!current) return;
    log.write(tty ? `\r${line(current)}\x1b[K\n` : `pull: ${current.file} ${formatBytes(current.received)}\n`);
    current = undefined;
  };
  return {
    onProgress: (p) => {
      if (current && current.file !== p.file) finish();
      current = p;
      if (!tty) return;
      const now = Date.now();
      if (now - lastDraw < 100 && p.received !== p.total) return;
      lastDraw = now;
      log.write(`\r${line(p)}\x1b[K`);
    },
    end: finish,
  };
}

/** Resolves (downloading if needed) `opts.id` and prints the model directory. */
export async function runPull(opts: RunPullOptions): Promise<string> {
  if (!opts.id) usage('pull: a model id (owner/name) is required');
  if (opts.timeoutSeconds !== undefined && !(opts.timeoutSeconds > 0 && opts.timeoutSeconds * 1000 <= 2 ** 31 - 1)) {
    usage(`pull: --timeout must be a positive number of seconds (at most ${Math.floor((2 ** 31 - 1) / 1000)}), got ${String(opts.timeoutSeconds)}`);
  }
  const log = opts.log === undefined ? process.stderr : opts.log;
  const out = opts.out === undefined ? process.stdout : opts.out;
  const printer = log ? pullProgressPrinter(log) : undefined;
  try {
    const dir = await resolveModel(opts.id, {
      revision: opts.revision,
      cacheDir: opts.cacheDir,
      endpoint: opts.endpoint,
      offline: opts.offline,
      deadlineMs: opts.timeoutSeconds === undefined ? undefined : Math.round(opts.timeoutSeconds * 1000),
      signal: opts.signal,
      onProgress: printer?.onProgress,
    });
    printer?.end();
    out?.write(`${dir}\n`);
    return dir;
  } catch (err) {
    printer?.end();
    throw err;
  }
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
  return models;
}

// mri gives strings, numbers (numeric values) or booleans (a flag without a value).
interface PullFlags {
  revision?: unknown;
  'cache-dir'?: unknown;
  endpoint?: unknown;
  offline?: unknown;
  timeout?: unknown;
}

interface ListFlags {
  'cache-dir'?: unknown;
  json?: unknown;
}

function report(err: unknown): void {
  const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
  process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
  process.exitCode = e.code === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_FAILURE;
}

const str = (v: unknown): string | undefined => (v === undefined || v === true || v === false ? undefined : String(v));

/** Adds `pull` and `list` to the rustasr CLI program. */
export function registerModelCommands(prog: Sade): Sade {
  prog
    .command('pull <id>')
    .describe('Download a Hugging Face model (owner/name) into the cache and print its directory.')
    .option('--revision', 'Branch, tag or commit', 'main')
    .option('--cache-dir', 'Cache root (default: $RUSTASR_CACHE_DIR or ~/.cache/rustasr)')
    .option('--endpoint', 'Hub URL (default: $HF_ENDPOINT or https://huggingface.co)')
    .option('--offline', 'Use only the cache', false)
    .option('--timeout', 'Give up after this many seconds in all (default: no deadline; a transfer slower than 1 kB/s fails anyway)')
    .example('pull Qwen/Qwen3-ASR-0.6B')
    .example('pull Qwen/Qwen3-ASR-0.6B --timeout 3600')
    .action(async (id: string, flags: PullFlags) => {
      try {
        for (const f of ['revision', 'cache-dir', 'endpoint', 'timeout'] as const) {
          if (flags[f] === true || flags[f] === '') usage(`--${f} needs a value`);
        }
        let timeoutSeconds: number | undefined;
        if (flags.timeout !== undefined) {
          timeoutSeconds = typeof flags.timeout === 'number' ? flags.timeout : Number(String(flags.timeout).trim() || NaN);
          if (!(timeoutSeconds > 0)) usage(`--timeout must be a positive number of seconds, got ${String(flags.timeout)}`);
        }
        await runPull({
          timeoutSeconds,
          id: String(id),
          revision: str(flags.revision),
          cacheDir: str(flags['cache-dir']),
          endpoint: str(flags.endpoint),
          offline: flags.offline === true ? true : undefined,
        });
      } catch (err) {
        report(err);
      }
    });
  prog
    .command('list')
    .describe('List the models in the cache.')
    .option('--cache-dir', 'Cache root (default: $RUSTASR_CACHE_DIR or ~/.cache/rustasr)')
    .option('--json', 'Print a JSON array', false)
    .action(async (flags: ListFlags) => {
      try {
        if (flags['cache-dir'] === true || flags['cache-dir'] === '') usage('--cache-dir needs a value');
        await runList({ cacheDir: str(flags['cache-dir']), json: flags.json === true });
      } catch (err) {
        report(err);
      }
    });
  return prog;
}
