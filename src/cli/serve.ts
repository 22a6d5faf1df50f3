// `rustasr serve`: the OpenAI-compatible transcription server (docs/server.md).
import type { Sade } from 'sade';

import { DEFAULT_ALIGNER } from '../api/align.js';
import { DEVICES, type Device } from '../api/model.js';
import { RustAsrError } from '../errors.js';
import type { ServeOptions } from '../server/server.js';
import { DEFAULT_MODEL, EXIT_FAILURE, EXIT_USAGE, enumOpt, intOpt, maxThreads, numberOpt, stringOpt } from './common.js';


type Flags = Record<string, unknown>;

/** Validates the flags (UsageError on a bad one) into ServeOptions; the API key comes from RUSTASR_API_KEY when not given. */
export function parseServeFlags(flags: Flags, env: NodeJS.ProcessEnv = process.env): ServeOptions {
  const key = stringOpt('api-key', flags['api-key']) ?? (env['RUSTASR_API_KEY'] || undefined);
  const drain = numberOpt('drain-timeout', flags['drain-timeout'], 0, 86400);
  return {
    model: stringOpt('model', flags['model']) ?? DEFAULT_MODEL,
    modelId: stringOpt('model-id', flags['model-id']),
    // --no-aligner: none; omitted: the default aligner when it is cached (ServeOptions.aligner).
    aligner: flags['aligner'] === false ? false : stringOpt('aligner', flags['aligner']),
    load: {
      device: enumOpt('device', flags['device'], DEVICES as readonly Device[]),
      deviceIndex: intOpt('device-index', flags['device-index'], 0, 255),
      quant: enumOpt('quant', flags['quant'], ['bf16', 'int8', 'int4'] as const),
      threads: intOpt('threads', flags['threads'], 0, maxThreads()),
    },
    host: stringOpt('host', flags['host']),
    port: intOpt('port', flags['port'], 0, 65535),
    maxNewTokens: intOpt('max-new-tokens', flags['max-new-tokens'], 1, 32768),
    maxConcurrent: intOpt('max-concurrent', flags['max-concurrent'], 1, 1024),
    maxQueue: intOpt('max-queue', flags['max-queue'], 0, 100000),
    apiKey: key,
    maxUploadMb: numberOpt('max-upload-mb', flags['max-upload-mb'], 0.001, 1048576),
    memoryUploadMb: numberOpt('memory-upload-mb', flags['memory-upload-mb'], 0, 1048576),
    drainTimeoutMs: drain === undefined ? undefined : Math.round(drain * 1000),
  };
}

/**
 * Runs the server until SIGTERM / SIGINT: then it drains (no new connections, running transcriptions
 * finish within --drain-timeout) and exits 0. A model that fails to load exits 1.
 */
async function runServe(flags: Flags): Promise<void> {
  const opts = parseServeFlags(flags);
  // The server modules are loaded by this command only, not by every CLI start.
  const { RustAsrServer } = await import('../server/server.js');
  const server = new RustAsrServer(opts);
  const log = (s: string) => process.stderr.write(`rustasr serve: ${s}\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: draining (${server.gate.running} running, ${server.gate.waiting} queued)`);
    server.close().then(
      () => {
        log('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log(`close failed: ${String(err)}`);
        process.exit(EXIT_FAILURE);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  await server.listen();
  log(`listening on ${server.url}${opts.apiKey === undefined ? '' : ' (API key required)'}; loading ${String(opts.model)}`);
  try {
    const m = await server.ready;
    const a = server.aligner;
    log(
      `ready: model ${server.context.modelId} on ${m.device}${m.deviceName === '' ? '' : ` (${m.deviceName})`}; ` +
        (a === undefined ? `no forced aligner (no word timestamps; --aligner DIR|ID, e.g. ${DEFAULT_ALIGNER})` : `aligner ${a.dir}`),
    );
  } catch (err) {
    if (stopping) return;
    const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
    log(`${e.code}: ${e.message}`);
    await server.close();
    process.exit(EXIT_FAILURE);
  }
}

/** Adds `serve` to the rustasr CLI program. */
export function registerServe(prog: Sade): Sade {
  prog
    .command('serve')
    .describe('Serve the OpenAI audio transcription API (POST /v1/audio/transcriptions) and live recognition (WebSocket GET /v1/realtime) over HTTP; see docs/server.md.')
    .option('--model, -m', `Model directory or Hugging Face repo id (default ${DEFAULT_MODEL})`)
    .option('--model-id', 'The id /v1/models lists and `model` fields name (default: the base name of --model)')
    .option('--host', 'Address to bind (default 127.0.0.1; 0.0.0.0 for every interface)')
    .option('--port', 'Port (default 8080; 0 picks a free one)')
    .option('--device', 'auto | cpu | cuda | metal (default auto)')
    .option('--device-index', 'Which GPU (CUDA device ordinal, default 0)')
    .option('--quant', 'Decoder weights: bf16 | int8 (default bf16; the aligner stays bf16)')
    .option('--aligner', `Forced aligner directory or hub id, for word timestamps and word-timed srt/vtt (default ${DEFAULT_ALIGNER} when cached; --no-aligner: none)`)
    .option('--threads', 'Number of CPU threads (default: all)')
    .option('--max-new-tokens', 'Maximum number of generated tokens per segment (default 512; caps a realtime step too)')
    .option('--max-concurrent', 'Transcriptions and realtime sessions decoded at once (default 2)')
    .option('--max-queue', 'Requests that may wait beyond --max-concurrent before 429 (default 16)')
    .option('--api-key', 'Require Authorization: Bearer <key> (default: $RUSTASR_API_KEY, else none)')
    .option('--max-upload-mb', 'Largest audio upload in MiB (default 25)')
    .option('--memory-upload-mb', 'Uploads above this many MiB go to a private temp file (default 8)')
    .option('--drain-timeout', 'Seconds running transcriptions get to finish on SIGTERM (default 30)')
    .example('serve --model ./Qwen3-ASR-0.6B --port 8080')
    .example('serve --host 0.0.0.0 --max-concurrent 4 --api-key "$KEY"')
    .example('serve --model ./Qwen3-ASR-0.6B --aligner ./Qwen3-ForcedAligner-0.6B')
    .action(async (flags: Flags) => {
      try {
        await runServe(flags);
      } catch (err) {
        const e = err instanceof RustAsrError ? err : new RustAsrError('INTERNAL', String(err));
        process.stderr.write(`rustasr: ${e.code}: ${e.message}\n`);
        process.exit(e.code === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_FAILURE);
      }
    });
  return prog;
}
