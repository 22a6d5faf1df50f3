// Formats with no well-kept, permissively licensed JavaScript/WebAssembly decoder (MP4/M4A/AAC above all:
// the only WebAssembly AAC decoder on npm is FAAD2, GPL-2.0) are decoded by an `ffmpeg` found on PATH, when
// there is one. The input is spooled to a private temp file (an M4A's index may sit at its end, which a
// pipe cannot seek to), unless the caller gave the file's path; ffmpeg writes float WAV to a pipe, read by
// the WAV reader as it arrives.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, isAbsolute, join } from 'node:path';

import { RustAsrError } from '../errors.js';
import type { DecodedBlock, DecoderOptions, FormatDecoder } from './decoder.js';
import type { AudioStreamFormat } from './types.js';
import { WavReader } from './wav.js';

/**
 * The ffmpeg to use: `option` (a path, or false for none), else $RUSTASR_FFMPEG (a path; '' or '0' for none),
 * else `ffmpeg` on PATH. Undefined when there is none.
 */
export function findFfmpeg(option?: string | false): string | undefined {
  if (option === false) return undefined;
  const env = process.env.RUSTASR_FFMPEG;
  const want = option ?? env;
  if (want !== undefined) {
    if (want === '' || want === '0') return undefined;
    if (isAbsolute(want) || want.includes('/')) return executable(want) ? want : undefined;
    return onPath(want);
  }
  return onPath('ffmpeg');
}

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, name);
    if (executable(p)) return p;
  }
  return undefined;
}

/** Bytes of ffmpeg's stderr kept for the error message. */
const STDERR_TAIL = 2000;

export class FfmpegDecoder implements FormatDecoder {
  private dir: string | undefined;
  private file: FileHandle | undefined;
  private child: ChildProcess | undefined;
  private wav: WavReader;
  private freed = false;

  constructor(
    private readonly ffmpeg: string,
    /** The format in words, for messages. */
    private readonly name: string,
    private readonly opts: DecoderOptions & { path?: string },
  ) {
    this.wav = new WavReader({ mono: opts.mono });
  }

  get info(): AudioStreamFormat | undefined {
    const f = this.wav.info;
    return f && { format: `${this.name} (ffmpeg)`, sampleRate: f.sampleRate, channels: f.channels };
  }

  async *write(bytes: Uint8Array): AsyncGenerator<DecodedBlock> {
    if (this.opts.path !== undefined || bytes.length === 0) return;
    if (!this.file) {
      this.dir = await mkdtemp(join(tmpdir(), 'rustasr-ffmpeg-'));
      this.file = await open(join(this.dir, 'input'), 'wx', 0o600);
    }
    await this.file.write(bytes);
    yield* [];
  }

  async *end(): AsyncGenerator<DecodedBlock> {
    let input = this.opts.path;
    if (input === undefined) {
      if (!this.file) throw new RustAsrError('EMPTY_AUDIO', 'no audio bytes');
      await this.file.close();
      this.file = undefined;
      input = join(this.dir!, 'input');
    }
    const child = spawn(this.ffmpeg, ['-nostdin', '-hide_banner', '-loglevel', 'error', '-i', input, '-vn', '-f', 'wav', '-c:a', 'pcm_f32le', 'pipe:1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => (stderr = (stderr + s).slice(-STDERR_TAIL)));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('error', (err) => reject(new RustAsrError('IO_ERROR', `cannot run ${this.ffmpeg}: ${err.message}`, { cause: err })));
      child.once('close', (code) => resolve(code));
    });
    exited.catch(() => {});
    try {
      for await (const chunk of child.stdout!) yield* this.wav.write(chunk as Buffer);
      const code = await exited;
      if (code !== 0) {
        throw new RustAsrError('INVALID_AUDIO', `ffmpeg could not decode the ${this.name} input (exit code ${code}): ${stderr.trim() || 'no message'}`);
      }
      yield* this.wav.end();
    } catch (err) {
      if (err instanceof RustAsrError && err.code !== 'INVALID_AUDIO' && err.code !== 'IO_ERROR' && err.code !== 'EMPTY_AUDIO') {
        throw new RustAsrError('INVALID_AUDIO', `ffmpeg's output for the ${this.name} input could not be read: ${err.message}`, { cause: err });
      }
      throw err;
    } finally {
      this.free();
    }
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
    const file = this.file;
    const dir = this.dir;
    this.file = undefined;
    void (async () => {
      await file?.close().catch(() => {});
      if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {});
    })();
  }
}
