// The rustasr command line: `rustasr infer <wav> --model <dir> ...`.
import sade from 'sade';

import { Model, type KernelName } from '../api/model.js';
import { loadAudio } from '../api/transcribe.js';
import { RustAsrError } from '../errors.js';
import { StreamingDetokenizer } from '../text/detokenizer.js';
import { registerSynth } from './synth.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

interface InferFlags {
  model?: string;
  device?: string;
  'max-new-tokens'?: number | string;
  language?: string;
  context?: string;
  format?: string;
  threads?: number | string;
  kernel?: string;
}

function usage(message: string): never {
  throw new RustAsrError('INVALID_OPTION', message);
}

function intFlag(name: string, v: number | string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < 0) usage(`--${name} must be a non-negative integer, got ${String(v)}`);
  return n;
}

async function infer(file: string, flags: InferFlags): Promise<void> {
  const format = flags.format ?? 'text';
  if (format !== 'text' && format !== 'json') usage(`--format must be text or json, got ${format}`);
  if (!flags.model) usage('--model <dir> is required');
  const device = flags.device ?? 'auto';
  if (!['auto', 'cpu', 'cuda', 'metal'].includes(device)) usage(`--device must be auto, cpu, cuda or metal, got ${device}`);
  if (device === 'cuda' || device === 'metal') {
    throw new RustAsrError('UNSUPPORTED_DEVICE', `--device ${device}: this build has only the CPU backend`);
  }
  const maxNewTokens = intFlag('max-new-tokens', flags['max-new-tokens']);
  const threads = intFlag('threads', flags.threads);
  const model = await Model.load(String(flags.model), { threads, kernel: flags.kernel as KernelName | undefined });
  try {
    const samples = await loadAudio(file, model.info.sampleRate);
    const detok = new StreamingDetokenizer(model.tokenizer, flags.language === undefined);
    const gen = model.decode(samples, { maxNewTokens, language: flags.language, context: flags.context });
    for (;;) {
      const r = await gen.next();
      if (r.done) {
        if (format === 'json') {
          const { text, language, tokens, timings } = r.value;
          process.stdout.write(JSON.stringify({ text, language: language ?? null, tokens, timings }) + '\n');
        } else {
          process.stdout.write(detok.end() + '\n');
          if (process.stderr.isTTY) {
            const t = r.value.timings;
            process.stderr.write(
              `audio ${t.audioSeconds.toFixed(2)} s, total ${t.totalMs.toFixed(0)} ms (RTF ${t.rtf.toFixed(3)}): ` +
                `mel ${t.melMs.toFixed(0)} ms, encoder ${t.encoderMs.toFixed(0)} ms, prefill ${t.prefillMs.toFixed(0)} ms, ` +
                `decode ${t.decodeMs.toFixed(0)} ms\n`,
            );
          }
        }
        return;
      }
      if (format === 'text') process.stdout.write(detok.push(r.value));
    }
  } finally {
    model.dispose();
  }
}

export async function main(argv: string[]): Promise<void> {
  const prog = sade('rustasr');
  prog.version('0.1.0');
  prog
    .command('infer <file>')
    .describe('Transcribe a 16 kHz WAV file.')
    .option('--model, -m', 'Model directory (config.json, model.safetensors, tokenizer files)')
    .option('--device', 'auto | cpu | cuda | metal', 'auto')
    .option('--language', 'Force the language (e.g. English)')
    .option('--context', 'Context text given to the decoder (glossary, names)')
    .option('--max-new-tokens', 'Maximum number of generated tokens', 512)
    .option('--format', 'Output format: text | json', 'text')
    .option('--threads', 'Number of CPU threads (default: all)')
    .option('--kernel', 'Force a CPU kernel: auto | avx512bf16 | avx512f | avx2 | neon | scalar', 'auto')
    .action(async (file: string, flags: InferFlags) => {
      try {
        await infer(file, flags);
      } catch (err) {
        const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
        process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
        process.exitCode = e.code === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_FAILURE;
      }
    });
  registerSynth(prog);
  prog.parse(argv);
}
