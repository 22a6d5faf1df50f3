// `rustasr synth --variant 0.6b|1.7b --out DIR [--seed N] [--untied]`: writes a synthetic checkpoint (real
// config and tokenizer files, random BF16 weights of the real shapes) for benchmarks.
import type { Sade } from 'sade';

import { RustAsrError } from '../errors.js';
import type { SynthResult, SynthVariant } from '../synth/synth.js';
import type { WriteProgress } from '../synth/safetensors-writer.js';
import { EXIT_FAILURE, EXIT_USAGE } from './common.js';


export interface RunSynthOptions {
  variant: string;
  out: string;
  seed?: number;
  untied?: boolean;
  /** Directory with the real config.json and tokenizer files (default: see synthCheckpoint). */
  baseDir?: string;
  /** Progress lines go here (default: process.stderr); pass null for silence. */
  log?: NodeJS.WritableStream | null;
}

interface SynthFlags {
  variant?: string;
  out?: string;
  seed?: number | string;
  untied?: boolean;
  'base-dir'?: string;
}

function usage(message: string): never {
  throw new RustAsrError('INVALID_OPTION', message);
}

const gb = (n: number) => `${(n / 1e9).toFixed(2)} GB`;

/** A progress printer: a rewritten line on a TTY, otherwise one line per 10%. */
function progressPrinter(log: NodeJS.WritableStream): (p: WriteProgress) => void {
  const tty = (log as { isTTY?: boolean }).isTTY === true;
  let lastDecile = -1;
  let lastTtyMs = 0;
  return (p) => {
    const frac = p.totalBytes > 0 ? p.bytesWritten / p.totalBytes : 1;
    const line = `synth: ${gb(p.bytesWritten)} / ${gb(p.totalBytes)} (${(frac * 100).toFixed(0)}%)`;
    if (tty) {
      const now = Date.now();
      if (now - lastTtyMs < 200 && frac < 1) return;
      lastTtyMs = now;
      log.write(`\r${line}${p.tensor ? ` ${p.tensor}` : ''}\x1b[K`);
      if (frac >= 1) log.write('\n');
      return;
    }
    const decile = Math.floor(frac * 10);
    if (decile > lastDecile) {
      lastDecile = decile;
      log.write(`${line}\n`);
    }
  };
}

/** Validates the options, writes the checkpoint and prints progress and a summary to `log`. */
export async function runSynth(opts: RunSynthOptions): Promise<SynthResult> {
  // Benchmark tooling: loaded by this command only, never on the import graph of `rustasr` or the other commands.
  const { SYNTH_VARIANTS, synthCheckpoint } = await import('../synth/synth.js');
  if (!SYNTH_VARIANTS.includes(opts.variant as SynthVariant)) {
    usage(`--variant must be ${SYNTH_VARIANTS.join(' or ')}, got ${String(opts.variant)}`);
  }
  if (!opts.out) usage('--out <dir> is required');
  if (opts.seed !== undefined && (!Number.isSafeInteger(opts.seed) || opts.seed < 0)) {
    usage(`--seed must be a non-negative integer, got ${String(opts.seed)}`);
  }
  const log = opts.log === undefined ? process.stderr : opts.log;
  log?.write(
    `synth: Qwen3-ASR ${opts.variant}, seed ${opts.seed ?? 0}${opts.untied ? ', untied lm_head' : ''} -> ${opts.out}\n`,
  );
  const res = await synthCheckpoint({
    variant: opts.variant as SynthVariant,
    out: opts.out,
    seed: opts.seed,
    untied: opts.untied,
    baseDir: opts.baseDir,
    onProgress: log ? progressPrinter(log) : undefined,
  });
  log?.write(
    `synth: wrote ${res.modelPath}: ${res.tensors} tensors, ${(res.params / 1e6).toFixed(1)}M params, ` +
      `${gb(res.bytes)} in ${(res.ms / 1000).toFixed(1)} s\n`,
  );
  return res;
}

/** Adds the `synth` command to the rustasr CLI program. */
export function registerSynth(prog: Sade): Sade {
  return prog
    .command('synth')
    .describe('Write a synthetic checkpoint (real config and tokenizer, random BF16 weights) for benchmarks.')
    .option('--variant', 'Model size: 0.6b | 1.7b')
    .option('--out, -o', 'Output directory')
    .option('--seed', 'PRNG seed (same seed, same bytes)', 0)
    .option('--untied', 'Also write thinker.lm_head.weight (as the real checkpoint files may)', false)
    .option('--base-dir', 'Directory with the real config.json and tokenizer files (default: $RUSTASR_MODEL_FILES_DIR or ../shared/models/qwen3-asr-0.6b)')
    .example('synth --variant 0.6b --out /tmp/synth-0.6b')
    .action(async (flags: SynthFlags) => {
      try {
        let seed: number | undefined;
        if (flags.seed !== undefined) {
          seed = typeof flags.seed === 'number' ? flags.seed : flags.seed.trim() === '' ? Number.NaN : Number(flags.seed);
          if (!Number.isSafeInteger(seed) || seed < 0) usage(`--seed must be a non-negative integer, got ${String(flags.seed)}`);
        }
        await runSynth({
          variant: String(flags.variant ?? ''),
          out: flags.out === undefined ? '' : String(flags.out),
          seed,
          untied: flags.untied === true,
          baseDir: flags['base-dir'] === undefined ? undefined : String(flags['base-dir']),
        });
      } catch (err) {
        const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
        process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
        process.exitCode = e.code === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_FAILURE;
      }
    });
}
