// `rustasr pull <id>`: download a Hugging Face model into the cache and print its directory.
import type { Sade } from 'sade';

import { downloadMeter } from '../api/progress.js';
import { resolveModel, type DownloadProgress } from '../model/resolve.js';
import { report, usage } from './common.js';
import { downloadLine, formatBytes, terminal } from './progress.js';

export interface RunPullOptions {
  id: string;
  revision?: string;
  cacheDir?: string;
  endpoint?: string;
  offline?: boolean;
  signal?: AbortSignal;
  /** The model directory is printed here (default: process.stdout); null for silence. */
  out?: NodeJS.WritableStream | null;
  /** Progress goes here (default: process.stderr): a bar on a TTY, one line per file otherwise; null for silence. */
  log?: (NodeJS.WritableStream & { isTTY?: boolean }) | null;
}

/** A progress printer: a redrawn bar with speed and ETA on a TTY (erased when done), otherwise one line per finished file. */
export function pullProgressPrinter(log: NodeJS.WritableStream & { isTTY?: boolean }): { onProgress: (p: DownloadProgress) => void; end: () => void } {
  const tty = log.isTTY === true;
  const term = terminal(log, log, { quiet: false });
  let current: DownloadProgress | undefined;
  const meter = downloadMeter((p) => term.status(downloadLine(p), p.received === p.total));
  const finish = () => {
    if (!current) return;
    if (!tty) log.write(`pull: ${current.file} ${formatBytes(current.received)}\n`);
    current = undefined;
  };
  return {
    onProgress: (p) => {
      if (current && current.file !== p.file) finish();
      current = p;
      if (tty) meter(p);
    },
    end: () => {
      finish();
      term.done();
    },
  };
}

/** Resolves (downloading if needed) `opts.id` and prints the model directory. */
export async function runPull(opts: RunPullOptions): Promise<string> {
  if (!opts.id) usage('pull: a model id (owner/name) is required');
  const log = opts.log === undefined ? process.stderr : opts.log;
  const out = opts.out === undefined ? process.stdout : opts.out;
  const printer = log ? pullProgressPrinter(log) : undefined;
  try {
    const dir = await resolveModel(opts.id, {
      revision: opts.revision,
      cacheDir: opts.cacheDir,
      endpoint: opts.endpoint,
      offline: opts.offline,
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

interface PullFlags {
  revision?: unknown;
  'cache-dir'?: unknown;
  endpoint?: unknown;
  offline?: unknown;
}

export const str = (v: unknown): string | undefined => (v === undefined || v === true || v === false ? undefined : String(v));

/** Adds `pull` to the rustasr CLI program. */
export function registerPull(prog: Sade): Sade {
  prog
    .command('pull <id>')
    .describe('Download a Hugging Face model (owner/name) into the cache and print its directory.')
    .option('--revision', 'Branch, tag or commit', 'main')
    .option('--cache-dir', 'Cache root (default: $RUSTASR_CACHE_DIR or ~/.cache/rustasr)')
    .option('--endpoint', 'Hub URL (default: $HF_ENDPOINT or https://huggingface.co)')
    .option('--offline', 'Use only the cache', false)
    .example('pull Qwen/Qwen3-ASR-0.6B')
    .action(async (id: string, flags: PullFlags) => {
      try {
        for (const f of ['revision', 'cache-dir', 'endpoint'] as const) {
          if (flags[f] === true || flags[f] === '') usage(`--${f} needs a value`);
        }
        await runPull({
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
  return prog;
}
