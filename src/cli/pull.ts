// `rustasr pull <id>`: download a Hugging Face model into the cache and print its directory.
import type { Sade } from 'sade';

import { downloadMeter } from '../hub/progress.js';
import { resolveModel, type DownloadProgress } from '../hub/resolve.js';
import { report, usage } from './common.js';
import { downloadLine, formatBytes, terminal } from './progress.js';

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

interface PullFlags {
  revision?: unknown;
  'cache-dir'?: unknown;
  endpoint?: unknown;
  offline?: unknown;
  timeout?: unknown;
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
  return prog;
}
