// Concurrency on one loaded model: simultaneous transcriptions give the ids of sequential ones, an abort or a
// dispose() only affects what it should, and misuse of a native session is a typed error, never a crash.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadAudio, loadModel, RustAsrError, transcribe, type Model } from '../src/index.js';
import { native } from '../src/native.js';
import { devSession } from './helpers/dev.js';
import { goldenPath, listCaseEntries, REPO_ROOT, type GoldenIndexEntry } from './helpers/golden.js';
import { rejection } from './helpers/errors.js';

const MODEL_DIR = goldenPath('models', 'tiny-a');
const MAX_NEW = 16;

/** Four cases with different audio, language and context. */
const CASES: GoldenIndexEntry[] = ['tiny-a__en_1p2s', 'tiny-a__en_5s__lang-English', 'tiny-a__ru_11s__ctx', 'tiny-a__en_21s'].map(
  (name) => {
    const c = listCaseEntries().find((e) => e.case === name);
    if (!c) throw new Error(`golden case ${name} missing`);
    return c;
  },
);

const optsOf = (c: GoldenIndexEntry) => ({
  maxNewTokens: MAX_NEW,
  ...(c.force_language !== null ? { language: c.force_language } : {}),
  ...(c.context !== '' ? { context: c.context } : {}),
});

let model: Model;
const audio = new Map<string, Float32Array>();

beforeAll(async () => {
  model = await loadModel(MODEL_DIR, { threads: 2 });
  for (const c of CASES) audio.set(c.case, await loadAudio(goldenPath(c.audio), 16000));
});
afterAll(() => model.dispose());

function samplesOf(c: GoldenIndexEntry): Float32Array {
  const s = audio.get(c.case);
  if (!s) throw new Error(`no audio for ${c.case}`);
  return s;
}

/** Collects a decode's ids; `onToken` sees each id and its index as it arrives. */
async function collect(
  m: Model,
  c: GoldenIndexEntry,
  extra: { signal?: AbortSignal } = {},
  onToken?: (i: number) => void | Promise<void>,
): Promise<number[]> {
  const ids: number[] = [];
  for await (const id of m.decode(samplesOf(c), { ...optsOf(c), ...extra })) {
    await onToken?.(ids.length);
    ids.push(id);
  }
  return ids;
}

describe('simultaneous transcriptions on one model', () => {
  it('four at once give the ids of four sequential ones (and the golden ids)', async () => {
    const sequential: number[][] = [];
    for (const c of CASES) sequential.push((await transcribe(goldenPath(c.audio), { model, ...optsOf(c) })).tokens);
    expect(sequential).toEqual(CASES.map((c) => c.generated_ids));

    const parallel = await Promise.all(CASES.map((c) => transcribe(goldenPath(c.audio), { model, ...optsOf(c) })));
    expect(parallel.map((r) => r.tokens)).toEqual(sequential);

    // Eight interleaved decode generators (every case twice) over the same model: they decode together
    // (batched steps, several sessions per pass over the weights), with the ids of decoding alone.
    const before = model.batchStats();
    const gens = await Promise.all([...CASES, ...CASES].map((c) => collect(model, c)));
    expect(gens).toEqual([...sequential, ...sequential]);
    const after = model.batchStats();
    expect(after.rows - before.rows).toBe(gens.reduce((n, g) => n + g.length - 1, 0)); // every step but the prefill's
    expect(after.rows - before.rows).toBeGreaterThan(after.batches - before.batches);
    expect(native().liveObjects().sessions).toBe(0);
  });

  it('aborting one leaves the others untouched', async () => {
    const controllers = CASES.map(() => new AbortController());
    const victim = 2;
    const results = await Promise.allSettled(
      CASES.map((c, k) =>
        collect(model, c, { signal: controllers[k]!.signal }, (i) => {
          if (k === victim && i === 3) controllers[k]!.abort();
        }),
      ),
    );
    results.forEach((r, k) => {
      if (k === victim) {
        expect(r.status).toBe('rejected');
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(RustAsrError);
        expect(((r as PromiseRejectedResult).reason as RustAsrError).code).toBe('ABORTED');
      } else {
        expect(r).toEqual({ status: 'fulfilled', value: CASES[k]!.generated_ids });
      }
    });
    expect(native().liveObjects().sessions).toBe(0);
  });

  it('an abort while a native call runs (encoder) rejects ABORTED once it returns; others finish', async () => {
    const ac = new AbortController();
    const long = CASES[3]!;
    const victim = transcribe(samplesOf(long), { model, ...optsOf(long), signal: ac.signal });
    const others = Promise.all(CASES.slice(0, 3).map((c) => transcribe(samplesOf(c), { model, ...optsOf(c) })));
    setImmediate(() => ac.abort()); // the mel / encoder call is on a worker thread by now
    expect((await rejection(victim)).code).toBe('ABORTED');
    expect((await others).map((r) => r.tokens)).toEqual(CASES.slice(0, 3).map((c) => c.generated_ids));
  });

  it('an already-aborted signal rejects ABORTED before any native work', async () => {
    const before = native().liveObjects();
    const e = await rejection(transcribe(samplesOf(CASES[0]!), { model, maxNewTokens: 4, signal: AbortSignal.abort() }));
    expect(e.code).toBe('ABORTED');
    expect(native().liveObjects()).toEqual(before);
  });
});

describe('native session misuse', () => {
  /** Calls a native session method and returns the synchronous throw as a plain object. */
  function syncError(f: () => unknown): { code: unknown; message: string } {
    try {
      f();
    } catch (err) {
      const e = err as Error & { code?: unknown };
      return { code: e.code, message: e.message };
    }
    throw new Error('expected a synchronous throw');
  }

  it('a session method called while another call of it runs throws INVALID_ARGUMENT "busy"; the first call is unaffected', async () => {
    // "Busy" lasts while the call executes on its worker thread: the first call is a long encoder run and the
    // second one is made right away, before that thread can have finished. The tiny model encodes 21 s in a
    // few ms, which a descheduled main thread on a loaded machine can outlast (seen once): 8 x 21 s instead.
    const s = devSession(model);
    try {
      const one = samplesOf(CASES[3]!);
      const long = new Float32Array(one.length * 8);
      for (let k = 0; k < 8; k++) long.set(one, k * one.length);
      const mel = await s.mel(long);
      const first = s.encode(mel.data, mel.frames, false);
      expect(syncError(() => s.step(1))).toEqual({ code: 'INVALID_ARGUMENT', message: 'the session is busy with another call' });
      expect(syncError(() => s.mel(new Float32Array(400))).message).toMatch(/busy/);
      const e1 = await first;
      // Free again: the same call gives the same result.
      const e2 = await s.encode(mel.data, mel.frames, false);
      expect(e2.embeds).toEqual(e1.embeds);
      expect(e1.nTokens).toBeGreaterThan(7 * CASES[3]!.n_audio_tokens);
    } finally {
      s.dispose();
    }
  });

  it('a validation error inside a method does not leave the session busy', async () => {
    const s = devSession(model);
    try {
      expect(syncError(() => s.encode(new Float32Array(5), 1, false)).code).toBe('INVALID_ARGUMENT');
      await expect(s.step(1)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/prefill first/) });
      // The session still works.
      const mel = await s.mel(samplesOf(CASES[0]!));
      expect(mel.frames).toBeGreaterThan(0);
    } finally {
      s.dispose();
    }
  });

  it('dispose() during a call lets the call finish; later calls throw "disposed"', async () => {
    const base = native().liveObjects();
    const s = devSession(model);
    const p = s.mel(samplesOf(CASES[3]!));
    s.dispose();
    expect(native().liveObjects().sessions).toBe(base.sessions + 1); // held by the call in flight
    expect((await p).frames).toBeGreaterThan(0);
    expect(syncError(() => s.mel(new Float32Array(400)))).toEqual({ code: 'INVALID_ARGUMENT', message: 'the session has been disposed' });
    s.dispose();
    // The call's worker releases its reference once its promise has settled.
    await new Promise((r) => setImmediate(r));
    expect(native().liveObjects()).toEqual(base);
  });

  it('terminating a worker_thread while its native call runs does not crash the process', async () => {
    // The worker drives the addon directly (no TypeScript): load, then whole segments in a loop until terminated.
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      const b = require(workerData.gypBuild)(workerData.root);
      (async () => {
        const m = await b.loadModel(workerData.model, { threads: 1 });
        const x = new Float32Array(16000 * 8).map((_, i) => Math.sin(i / 7) * 0.1);
        for (let k = 0; ; k++) {
          const s = m.createSession();
          const p = s.start(x, new Int32Array([1, 2]), new Int32Array([3]));
          if (k === 0) parentPort.postMessage('running');
          await p;
          s.dispose();
        }
      })();
    `;
    const base = native().liveObjects();
    const workerData = { root: REPO_ROOT, gypBuild: createRequire(import.meta.url).resolve('node-gyp-build'), model: MODEL_DIR };
    for (let k = 0; k < 3; k++) {
      const w = new Worker(src, { eval: true, workerData });
      const errors: unknown[] = [];
      w.on('error', (e) => errors.push(e));
      await new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('exit', () => reject(new Error(`worker exited early: ${String(errors[0])}`)));
      });
      await new Promise((r) => setTimeout(r, 5 + k * 20));
      await w.terminate();
      expect(errors).toEqual([]);
    }
    // The workers' models and sessions were freed with their environments.
    expect(native().liveObjects()).toEqual(base);
  });
});

// Last: these dispose the shared model (loading another costs ~4 s, mostly the tokenizer).
describe('dispose() while sessions run', () => {
  it('running sessions finish with the golden ids, transcriptions not yet in the engine fail INVALID_ARGUMENT', async () => {
    const base = native().liveObjects();
    expect(base.sessions).toBe(0);
    // Each decode pauses after its first token until all four hold a native session; then the model is
    // disposed, right after two more transcriptions were started (they are still reading their files).
    let release!: () => void;
    const allStarted = new Promise<void>((r) => (release = r));
    let started = 0;
    let late: Promise<PromiseSettledResult<unknown>[]> | undefined;
    const running = Promise.all(
      CASES.map((c) =>
        collect(model, c, {}, async (i) => {
          if (i !== 0) return;
          if (++started === CASES.length) {
            expect(native().liveObjects().sessions).toBe(CASES.length);
            late = Promise.allSettled(CASES.slice(0, 2).map((l) => transcribe(goldenPath(l.audio), { model, ...optsOf(l) })));
            model.dispose();
            // The handle is gone; the engine model lives on in the sessions.
            expect(native().liveObjects().models).toBe(base.models);
            release();
          }
          await allStarted;
        }),
      ),
    );
    expect(await running).toEqual(CASES.map((c) => c.generated_ids));
    const lateResults = await late;
    expect(lateResults).toHaveLength(2);
    for (const r of lateResults ?? []) {
      expect(r.status).toBe('rejected');
      const e = (r as PromiseRejectedResult).reason as unknown;
      expect(e).toBeInstanceOf(RustAsrError);
      expect(e).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/disposed/) });
    }
    expect(model.disposed).toBe(true);
    // The weights were released with the last session.
    expect(native().liveObjects()).toEqual({ models: base.models - 1, sessions: 0, aligners: 0 });
  });

  it('a disposed model rejects every call with INVALID_ARGUMENT; dispose() twice is a no-op', async () => {
    expect(model.disposed).toBe(true);
    model.dispose();
    const s = samplesOf(CASES[0]!);
    expect((await rejection(model.decode(s, { maxNewTokens: 2 }).next())).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(transcribe(s, { model, maxNewTokens: 2 }))).code).toBe('INVALID_ARGUMENT');
    expect(() => model.createSession()).toThrow(RustAsrError);
    expect(() => model.createSession()).toThrow(/disposed/);
    // Cheap metadata stays readable.
    expect(model.info.sampleRate).toBe(16000);
  });
});
