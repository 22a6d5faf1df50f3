// The rustasr command line. One file per command (infer, listen, serve, worker/enqueue, pull, list, rm,
// devices, synth), each exporting a
// register function; adding a command is one file and one line in COMMANDS.
//
// Exit codes: 0 success, 1 runtime error (bad audio, missing model, unsupported device, ...), 2 bad usage
// (unknown or malformed flags, out-of-range numbers, an unknown language, bad --config file, missing
// argument), 141 when stdout's reader went away (as `cat` in a pipe to `head`).
import sade, { type Sade } from 'sade';

import { EXIT_FAILURE, EXIT_USAGE, exitQuietlyOnEpipe, joinNegativeValues } from './common.js';
import { registerDevices } from './devices.js';
import { INFER_VALUE_FLAGS, registerInfer, STDIN_PLACEHOLDER } from './infer.js';
import { LISTEN_VALUE_FLAGS, registerListen } from './listen.js';
import { registerList } from './list.js';
import { registerPull } from './pull.js';
import { registerQueueCommands } from './queue.js';
import { registerRm } from './rm.js';
import { registerServe } from './serve.js';
import { registerSynth } from './synth.js';

export { EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_EPIPE, UsageError } from './common.js';
export { DEFAULT_MODEL } from './common.js';
export { FORMATS, parseInferOptions, readConfig, runInfer } from './infer.js';
export { formatCue } from '../text/subtitles.js';
export type { InferIo, InferOptions, OutputFormat } from './infer.js';

/** The commands, in the order `rustasr --help` lists them. */
const COMMANDS: ((prog: Sade) => Sade | void)[] = [
  registerInfer,
  registerListen,
  registerServe,
  registerQueueCommands,
  registerPull,
  registerList,
  registerRm,
  registerDevices,
  registerSynth,
];

/** Flags that take a value in any command (a negative number after one is its value, not a flag). */
const VALUE_FLAGS = new Set([...INFER_VALUE_FLAGS, ...LISTEN_VALUE_FLAGS, '--revision', '--cache-dir', '--endpoint', '--timeout']);

export async function main(argv: string[]): Promise<void> {
  exitQuietlyOnEpipe(process.stdout);
  const prog = sade('rustasr');
  prog.version('0.1.0');
  for (const register of COMMANDS) register(prog);
  // sade reports its own usage errors (unknown command or flag, missing argument) with exit code 1;
  // they are usage errors here (2). Its handlers run asynchronously and never call process.exit.
  const realExit = process.exit;
  process.exit = ((code?: number) => realExit.call(process, code === EXIT_FAILURE ? EXIT_USAGE : code)) as typeof process.exit;
  let ran: unknown;
  try {
    const args = joinNegativeValues(
      argv.map((a, i) => (i >= 2 && a === '-' ? STDIN_PLACEHOLDER : a)),
      VALUE_FLAGS,
    );
    ran = prog.parse(args, { unknown: (flag: string) => `Unknown option ${flag}` });
  } finally {
    process.exit = realExit;
  }
  await ran;
}
