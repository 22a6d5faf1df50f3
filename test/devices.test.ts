// Device choice: devices(), loadModel({ device }), the CPU fallback of device 'auto' and its warning, and
// `rustasr devices` / `infer --device`.
//
// The fallback path needs a GPU that probes usable but fails to start: test/fixtures/fake-cuda-plugin.cpp is
// compiled here (g++ -shared -fPIC) into a temporary directory and named by $RUSTASR_CUDA_PLUGIN. The native
// loader reads that variable, so it is set on this worker's process.env (vitest runs each test file in its
// own forked process: vitest.config.ts, pool 'forks') only after the "this machine" tests, and removed at
// the end; CLI children get their environment explicitly.
//
// "This machine" means what CI has: no usable GPU (with or without the CUDA plugin built next to the addon)
// and no Metal off macOS. Where a GPU is usable, or on macOS, the assertions that a GPU is absent are
// skipped; everything else runs.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { devices, loadModel, transcribe, type DeviceStatus, type Model } from '../src/index.js';
import { nativeDev } from '../src/native.js';
import { type CliRun, ensureDist, runCli } from './helpers/cli.js';
import { REPO_ROOT, goldenPath, loadCase } from './helpers/golden.js';
import { rejection } from './helpers/errors.js';

const PLUGIN_ENV = 'RUSTASR_CUDA_PLUGIN';
// This worker probes the machine as it is: a plugin named in the environment of whoever runs the tests does
// not count here (deleting it affects this forked worker only).
delete process.env[PLUGIN_ENV];
// A CUDA plugin next to the addon (CI builds one) changes nothing on a machine without a usable GPU: the
// "no GPU" assertions are skipped only where the machine really has one.
const NO_CUDA_HERE = !(await devices()).some((d) => d.kind === 'cuda' && d.available);
const NO_METAL_HERE = process.platform !== 'darwin';

const MODEL = goldenPath('models', 'tiny-a');
const WAV = goldenPath('audio', 'en_5s.wav');
const MAX = 16;
const FAKE_SOURCE = join(REPO_ROOT, 'test', 'fixtures', 'fake-cuda-plugin.cpp');
const FALLBACK_CODE = 'RUSTASR_DEVICE_FALLBACK';
const FAKE_FAILURE = 'simulated initialisation failure';

const scratch = mkdtempSync(join(tmpdir(), 'rustasr-devices-'));
let goldenIds: number[] = [];

beforeAll(async () => {
  const c = await loadCase('tiny-a__en_5s');
  goldenIds = c.json.greedy.generated_ids.slice(0, MAX);
});
afterAll(() => {
  delete process.env[PLUGIN_ENV];
  rmSync(scratch, { recursive: true, force: true });
});

function byKind(list: DeviceStatus[]): Record<string, DeviceStatus> {
  return Object.fromEntries(list.map((d) => [d.kind, d]));
}

/** Calls to process.emitWarning with the device-fallback code made while `fn` runs. */
async function fallbackWarnings<T>(fn: () => Promise<T>): Promise<{ value: T; warnings: unknown[][] }> {
  const spy = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
  try {
    const value = await fn();
    const warnings = spy.mock.calls.filter((c) => (c[1] as { code?: string } | undefined)?.code === FALLBACK_CODE);
    return { value, warnings };
  } finally {
    spy.mockRestore();
  }
}

async function goldenTokens(model: Model): Promise<number[]> {
  return (await transcribe(WAV, { model, maxNewTokens: MAX })).tokens;
}

// ------------------------------------------------------------------------------------------- this machine

describe('devices() and loadModel({ device }) on this machine', () => {
  it('lists cpu (available, named by its best kernel), then cuda and metal', async () => {
    const list = await devices();
    expect(list.map((d) => d.kind)).toEqual(['cpu', 'cuda', 'metal']);
    const { cpu } = byKind(list);
    const kernels = nativeDev().cpuKernels();
    expect(cpu).toEqual({ kind: 'cpu', available: true, name: kernels[0], reason: '' });
    for (const d of list) {
      expect(typeof d.name).toBe('string');
      // available <=> no reason
      expect(d.reason === '').toBe(d.available);
    }
  });

  it.runIf(NO_CUDA_HERE)('cuda is unavailable here, with a reason', async () => {
    const { cuda } = byKind(await devices());
    expect(cuda!.available).toBe(false);
    expect(cuda!.name).toBe('');
    expect(cuda!.reason).not.toBe('');
  });

  it.runIf(NO_METAL_HERE)('metal is unavailable here, with a reason', async () => {
    const { metal } = byKind(await devices());
    expect(metal!.available).toBe(false);
    expect(metal!.name).toBe('');
    expect(metal!.reason).toMatch(/Metal/);
  });

  it.runIf(NO_CUDA_HERE && NO_METAL_HERE)("device 'auto' (the default) loads on the CPU, without a warning, and gives the golden ids", async () => {
    for (const opts of [{ device: 'auto' as const }, {}]) {
      const { value: model, warnings } = await fallbackWarnings(() => loadModel(MODEL, opts));
      try {
        expect(warnings).toEqual([]);
        expect(model.device).toBe('cpu');
        expect(model.deviceName).toBe('');
        expect(model.deviceFallback).toBe('');
        expect(model.info.device).toBe('cpu');
        expect(model.info.deviceFallback).toBe('');
        expect(await goldenTokens(model)).toEqual(goldenIds);
      } finally {
        model.dispose();
      }
    }
  });

  it("device 'cpu' loads on the CPU", async () => {
    const model = await loadModel(MODEL, { device: 'cpu' });
    try {
      expect([model.device, model.deviceName, model.deviceFallback]).toEqual(['cpu', '', '']);
      expect(nativeDev().cpuKernels()).toContain(model.info.kernel);
    } finally {
      model.dispose();
    }
  });

  async function rejectsNamingTheReason(kind: 'cuda' | 'metal'): Promise<void> {
    const { reason } = byKind(await devices())[kind]!;
    const err = await rejection(loadModel(MODEL, { device: kind }));
    expect(err.code).toBe('UNSUPPORTED_DEVICE');
    expect(err.message).toContain(kind);
    expect(err.message).toContain(reason);
  }
  it.runIf(NO_CUDA_HERE)("device 'cuda' rejects with UNSUPPORTED_DEVICE naming the reason", () => rejectsNamingTheReason('cuda'));
  it.runIf(NO_METAL_HERE)("device 'metal' rejects with UNSUPPORTED_DEVICE naming the reason", () => rejectsNamingTheReason('metal'));

  it("an unknown device is INVALID_ARGUMENT (before any model lookup); a bad deviceIndex is INVALID_OPTION", async () => {
    const err = await rejection(loadModel('/no/such/model', { device: 'bogus' as 'cpu' }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toContain('"bogus"');
    expect((await rejection(loadModel(MODEL, { device: 'cpu', deviceIndex: -1 }))).code).toBe('INVALID_OPTION');
    expect((await rejection(loadModel(MODEL, { device: 'cpu', deviceIndex: 0.5 }))).code).toBe('INVALID_OPTION');
  });
});

// -------------------------------------------------------------------------------------- fake CUDA plugin

function buildFakePlugin(): string {
  const out = join(scratch, 'fake-cuda', process.platform === 'darwin' ? 'rustasr_cuda.dylib' : 'rustasr_cuda.so');
  execFileSync('mkdir', ['-p', dirname(out)]);
  execFileSync('g++', ['-std=c++17', '-shared', '-fPIC', '-O0', '-I', join(REPO_ROOT, 'native', 'include'), '-I', join(REPO_ROOT, 'native', 'src'), FAKE_SOURCE, '-o', out], {
    stdio: 'pipe',
  });
  return out;
}

// The CUDA loader is Linux-only (dlopen of rustasr_cuda.so); g++ is in CI's image (scripts/setup.sh).
describe.runIf(process.platform === 'linux')('a CUDA plugin whose GPU probes usable but fails to initialise', () => {
  let plugin = '';
  beforeAll(() => {
    plugin = buildFakePlugin();
    process.env[PLUGIN_ENV] = plugin;
  });
  afterAll(() => {
    delete process.env[PLUGIN_ENV];
  });

  it('devices() shows cuda available as "Fake GPU"', async () => {
    const { cuda, cpu } = byKind(await devices());
    expect(cuda).toEqual({ kind: 'cuda', available: true, name: 'Fake GPU', reason: '' });
    expect(cpu!.available).toBe(true);
  });

  it("device 'auto' falls back to the CPU with the reason, warns once, and still gives the golden ids", async () => {
    const { value: model, warnings } = await fallbackWarnings(() => loadModel(MODEL, { device: 'auto' }));
    try {
      expect(model.device).toBe('cpu');
      expect(model.deviceName).toBe('');
      expect(model.deviceFallback).toContain(FAKE_FAILURE);
      expect(model.info.deviceFallback).toBe(model.deviceFallback);
      expect(warnings).toHaveLength(1);
      const [message, options] = warnings[0]!;
      expect(String(message)).toContain(FAKE_FAILURE);
      expect(options).toEqual({ type: 'RustasrWarning', code: FALLBACK_CODE });
      expect(await goldenTokens(model)).toEqual(goldenIds);
    } finally {
      model.dispose();
    }
  });

  it("the warning reaches process 'warning' listeners as a RustasrWarning", async () => {
    const seen: (Error & { code?: string })[] = [];
    const onWarning = (w: Error & { code?: string }) => seen.push(w);
    process.on('warning', onWarning);
    try {
      const model = await loadModel(MODEL); // the default device is 'auto'
      model.dispose();
      await new Promise((r) => setImmediate(r)); // 'warning' is emitted on the next tick
    } finally {
      process.off('warning', onWarning);
    }
    const ours = seen.filter((w) => w.code === FALLBACK_CODE);
    expect(ours).toHaveLength(1);
    expect(ours[0]!.name).toBe('RustasrWarning');
    expect(ours[0]!.message).toContain(FAKE_FAILURE);
  });

  it("device 'cpu' does not touch the GPU: no fallback, no warning", async () => {
    const { value: model, warnings } = await fallbackWarnings(() => loadModel(MODEL, { device: 'cpu' }));
    try {
      expect(warnings).toEqual([]);
      expect([model.device, model.deviceFallback]).toEqual(['cpu', '']);
    } finally {
      model.dispose();
    }
  });

  it("device 'cuda' rejects with UNSUPPORTED_DEVICE and the plugin's message", async () => {
    const err = await rejection(loadModel(MODEL, { device: 'cuda' }));
    expect(err.code).toBe('UNSUPPORTED_DEVICE');
    expect(err.message).toContain(FAKE_FAILURE);
  });
});

// --------------------------------------------------------------------------------------------------- CLI


function run(args: string[], plugin?: string): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = { ...process.env, RUSTASR_OFFLINE: '1', RUSTASR_CACHE_DIR: join(scratch, 'cache') };
  delete env[PLUGIN_ENV];
  if (plugin !== undefined) env[PLUGIN_ENV] = plugin;
  return runCli(args, env);
}

describe('rustasr devices / infer --device', () => {
  beforeAll(() => {
    // bin/rustasr.js runs dist/ (built by `npm run build` in CI); a dist/ older than src/ is rebuilt once.
    ensureDist(join('cli', 'devices.js'));
  });

  it('devices --json parses and lists cpu, cuda, metal; exit 0', async () => {
    const r = await run(['devices', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const list = JSON.parse(r.stdout) as DeviceStatus[];
    expect(list.map((d) => d.kind)).toEqual(['cpu', 'cuda', 'metal']);
    expect(list[0]).toMatchObject({ kind: 'cpu', available: true, reason: '' });
    for (const d of list) expect(Object.keys(d).sort()).toEqual(['available', 'kind', 'name', 'reason']);
    if (NO_CUDA_HERE) expect(list[1]).toMatchObject({ available: false, name: '' });
  });

  it('devices prints one line per kind with yes/no and why not; exit 0', async () => {
    const r = await run(['devices']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(4); // header + cpu, cuda, metal
    expect(lines[0]).toMatch(/^DEVICE\s+AVAILABLE\s+NAME\s+WHY NOT$/);
    const { cpu, cuda, metal } = byKind(await devices());
    expect(lines[1]).toMatch(new RegExp(`^cpu\\s+yes\\s+${cpu!.name}$`));
    expect(lines[2]).toMatch(/^cuda\s+(yes|no)\s/);
    expect(lines[3]).toMatch(/^metal\s+(yes|no)\s/);
    if (NO_CUDA_HERE) expect(lines[2]!.endsWith(cuda!.reason)).toBe(true);
    if (NO_METAL_HERE) expect(lines[3]!.endsWith(metal!.reason)).toBe(true);
  });

  it.runIf(NO_CUDA_HERE)('infer --device cuda exits 1 with UNSUPPORTED_DEVICE', async () => {
    const r = await run(['infer', WAV, '--model', MODEL, '--device', 'cuda']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^rustasr: UNSUPPORTED_DEVICE: .*cuda/);
  });

  it('infer --device bogus is a usage error (exit 2)', async () => {
    const r = await run(['infer', WAV, '--model', MODEL, '--device', 'bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--device must be one of auto, cpu, cuda, metal');
  });

  describe.runIf(process.platform === 'linux')('with the fake CUDA plugin', () => {
    let plugin = '';
    beforeAll(() => {
      plugin = buildFakePlugin();
    });

    it('devices --json shows cuda available as "Fake GPU"', async () => {
      const r = await run(['devices', '--json'], plugin);
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout) as DeviceStatus[])[1]).toEqual({ kind: 'cuda', available: true, name: 'Fake GPU', reason: '' });
    });

    it('infer (device auto) prints the golden ids and the fallback warning on stderr', async () => {
      const r = await run(['infer', WAV, '--model', MODEL, '--max-new-tokens', String(MAX), '--format', 'json'], plugin);
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual(goldenIds);
      expect(r.stderr).toContain(`[${FALLBACK_CODE}] RustasrWarning:`);
      expect(r.stderr).toContain(FAKE_FAILURE);
    });

    it('infer --device cuda exits 1 with UNSUPPORTED_DEVICE and the plugin message', async () => {
      const r = await run(['infer', WAV, '--model', MODEL, '--device', 'cuda'], plugin);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^rustasr: UNSUPPORTED_DEVICE: /);
      expect(r.stderr).toContain(FAKE_FAILURE);
    });
  });
});
