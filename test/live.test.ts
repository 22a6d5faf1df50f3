// Live recognition (listen(), transcriber({ live: true }), listen$, the Endpointer, `rustasr listen`):
// results before the input ends, endpoints inside pauses, no text on silence, event order, abort,
// backpressure with coalesced partials, bad input, and the engine's incremental reuse.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

import { lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  Endpointer,
  listen,
  loadAudio,
  loadModel,
  transcriber,
  type EndpointEvent,
  type FinalEvent,
  type LiveEvent,
  type Model,
  type PartialEvent,
} from '../src/index.js';
import { listen$ } from '../src/rx.js';
import { ensureDist, runCli } from './helpers/cli.js';
import { liveObjects } from './helpers/dev.js';
import { goldenPath } from './helpers/golden.js';
import { wavFromSamples } from '../scripts/wav-builder.mjs';

const MODEL_DIR = goldenPath('models', 'tiny-a');
let model: Model;
let en5: Float32Array;
let en21: Float32Array;
let en1: Float32Array;
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-live-'));

beforeAll(async () => {
  model = await loadModel(MODEL_DIR, { threads: 2 });
  await model.ready();
  en5 = await loadAudio(goldenPath('audio', 'en_5s.wav'), 16000);
  en21 = await loadAudio(goldenPath('audio', 'en_21s.wav'), 16000);
  en1 = await loadAudio(goldenPath('audio', 'en_1p2s.wav'), 16000);
});
afterAll(() => {
  model.dispose();
  rmSync(scratch, { recursive: true, force: true });
});

function chunks(x: Float32Array, size = 1600): { samples: Float32Array; sampleRate: number }[] {
  const out: { samples: Float32Array; sampleRate: number }[] = [];
  for (let i = 0; i < x.length; i += size) out.push({ samples: x.slice(i, i + size), sampleRate: 16000 });
  return out;
}

async function collect(it: AsyncIterable<unknown>): Promise<LiveEvent[]> {
  const out: LiveEvent[] = [];
  for await (const e of it) out.push(e as LiveEvent);
  return out;
}

function join2(a: Float32Array, gapSeconds: number, b: Float32Array): { x: Float32Array; gapStart: number; gapEnd: number } {
  const gap = Math.round(gapSeconds * 16000);
  const x = new Float32Array(a.length + gap + b.length);
  x.set(a);
  x.set(b, a.length + gap);
  return { x, gapStart: a.length, gapEnd: a.length + gap };
}

/** First and last sample louder than `level`. */
function voicedSpan(x: Float32Array, level = 0.01): [number, number] {
  let first = -1;
  let last = -1;
  for (let i = 0; i < x.length; i++) {
    if (Math.abs(x[i]!) > level) {
      if (first < 0) first = i;
      last = i;
    }
  }
  return [first, last];
}

describe('listen(): results while the audio arrives', () => {
  it('a paced source gets its first partial before the source ends', async () => {
    let pushed = 0;
    let ended = false;
    const pieces = chunks(en21, 1600); // 100 ms pieces, every 10 ms (time-compressed 10x)
    const src = Readable.from(
      (async function* () {
        for (const p of pieces) {
          await sleep(10);
          pushed += p.samples.length;
          yield p;
        }
        ended = true;
      })(),
      { objectMode: true },
    );
    let firstAt: { pushed: number; ended: boolean } | undefined;
    const events: LiveEvent[] = [];
    for await (const e of listen(src, { model })) {
      if (!firstAt && (e as LiveEvent).type === 'partial') firstAt = { pushed, ended };
      events.push(e as LiveEvent);
    }
    expect(firstAt).toBeDefined();
    expect(firstAt!.ended).toBe(false);
    expect(firstAt!.pushed).toBeLessThan(en21.length / 2);
    expect(events[events.length - 1]!.type).toBe('final');
  });

  it('events: partials of a segment, then its final; text = stable + unstable; stable only grows', async () => {
    const events = await collect(listen(Readable.from(chunks(en21), { objectMode: true }), { model }));
    expect(events.length).toBeGreaterThan(3);
    let stable = '';
    let lastText = '';
    let lastSeconds = 0;
    for (const e of events) {
      expect(e.segment).toBe(0);
      if (e.type === 'partial') {
        expect(e.text).toBe(e.stable + e.unstable);
        // Fast mode: what was stable stays, unless the official repetition clean-up collapsed a run of 20+
        // repeats into one (the random model loops: "_as_as_as..."), which only ever shortens the text.
        if (!e.stable.startsWith(stable)) expect(e.text.length).toBeLessThan(lastText.length);
        expect(e.text.startsWith(e.stable)).toBe(true);
        stable = e.stable;
        lastText = e.text;
        expect(e.audioSeconds).toBeGreaterThanOrEqual(lastSeconds);
        expect(e.audioSeconds).toBeLessThanOrEqual(en21.length / 16000 + 1e-9);
        lastSeconds = e.audioSeconds;
        expect(e.step.generated).toBeGreaterThan(0);
      }
    }
    const final = events[events.length - 1] as FinalEvent;
    expect(final.type).toBe('final');
    expect(['pause', 'input']).toContain(final.reason); // the clip ends in a pause longer than 600 ms
    expect(final.text.startsWith(stable) || final.text.length < lastText.length).toBe(true);
    expect(final.end).toBeLessThanOrEqual(en21.length / 16000 + 1e-9);
    expect(final.end).toBeGreaterThan(voicedSpan(en21)[1] / 16000);
    expect(final.start).toBeGreaterThanOrEqual(0);
    expect(final.start).toBeLessThan(1);
  });

  it('fast mode reuses the encoder windows and the KV prefix of earlier steps', async () => {
    const events = await collect(listen(Readable.from(chunks(en21), { objectMode: true }), { model }));
    const partials = events.filter((e): e is PartialEvent => e.type === 'partial');
    // After the first 8 s window is final, later steps encode only the tail window and keep the prompt up to it.
    const late = partials.filter((p) => p.audioSeconds > 12);
    expect(late.length).toBeGreaterThan(2);
    for (const p of late) {
      expect(p.step.cachedTokens).toBeGreaterThanOrEqual(104);
      expect(p.step.encodedTokens).toBeLessThan(p.step.cachedTokens + 104);
      expect(p.step.reusedTokens).toBeGreaterThan(100);
    }
    // Exact mode recomputes everything at every step.
    const exact = await collect(listen(Readable.from(chunks(en21), { objectMode: true }), { model, exact: true, endpoint: false }));
    for (const e of exact) if (e.type === 'partial') expect(e.step.reusedTokens).toBe(0);
  });

  it('the same events whatever the input piece sizes (deterministic steps)', async () => {
    const a = await collect(listen(Readable.from(chunks(en5, 1600), { objectMode: true }), { model }));
    const b = await collect(listen(Readable.from(chunks(en5, 7777), { objectMode: true }), { model }));
    const strip = (es: LiveEvent[]) => es.map((e) => ({ type: e.type, text: e.text, seg: e.segment }));
    expect(strip(b)).toEqual(strip(a));
  });

  it('speech, 2 s of silence, speech: two finals whose boundary lies inside the silence', async () => {
    const { x, gapStart, gapEnd } = join2(en5, 2, en1);
    const events = await collect(listen(Readable.from(chunks(x), { objectMode: true }), { model }));
    const finals = events.filter((e): e is FinalEvent => e.type === 'final');
    expect(finals).toHaveLength(2);
    expect(finals[0]!.reason).toBe('pause');
    expect(['pause', 'input']).toContain(finals[1]!.reason);
    const [, lastVoiced1] = voicedSpan(x.subarray(0, gapStart));
    const [firstVoiced2] = voicedSpan(x.subarray(gapEnd));
    const boundary = finals[0]!.end * 16000;
    expect(boundary).toBeGreaterThan(lastVoiced1);
    expect(boundary).toBeLessThan(gapEnd + firstVoiced2);
    expect(finals[1]!.start * 16000).toBeGreaterThanOrEqual(boundary);
    expect(finals[1]!.start * 16000).toBeLessThan(gapEnd + firstVoiced2);
    // Segment indices and order: segment 0's events, then segment 1's.
    expect(events.map((e) => e.segment)).toEqual([...events.map((e) => e.segment)].sort((p, q) => p - q));
    expect(finals.map((f) => f.segment)).toEqual([0, 1]);
  });

  it('silence gives no decode and no text', async () => {
    const quiet = new Float32Array(16000 * 6);
    let seed = 7;
    for (let i = 0; i < quiet.length; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      quiet[i] = ((seed / 2 ** 32) - 0.5) * 2e-4; // about -75 dBFS of noise
    }
    expect(await collect(listen(Readable.from(chunks(new Float32Array(16000 * 6)), { objectMode: true }), { model }))).toEqual([]);
    expect(await collect(listen(Readable.from(chunks(quiet), { objectMode: true }), { model }))).toEqual([]);
  });

  it('transcriber({ live: true }) takes WAV bytes; listen$ gives the same events', async () => {
    const wav = readFileSync(goldenPath('audio', 'en_5s.wav'));
    const t = transcriber({ model, live: true });
    const got = collect(t);
    t.end(wav);
    const viaTranscriber = await got;
    const viaRx = (await lastValueFrom(listen$(goldenPath('audio', 'en_5s.wav'), { model }).pipe(toArray()))) as LiveEvent[];
    const viaPath = await collect(listen(goldenPath('audio', 'en_5s.wav'), { model }));
    const strip = (es: LiveEvent[]) => es.map((e) => [e.type, e.text]);
    expect(strip(viaTranscriber)).toEqual(strip(viaPath));
    expect(strip(viaRx)).toEqual(strip(viaPath));
    expect(viaPath.length).toBeGreaterThan(1);
  });

  it('raw PCM input (s16le) gives the same events as the WAV', async () => {
    const wav = readFileSync(goldenPath('audio', 'en_5s.wav'));
    const pcm = wav.subarray(44); // the golden files are canonical 44-byte-header PCM
    const raw = await collect(listen(Readable.from([pcm]), { model, raw: { sampleRate: 16000, channels: 1, encoding: 's16le' } }));
    const viaPath = await collect(listen(goldenPath('audio', 'en_5s.wav'), { model }));
    expect(raw.map((e) => e.text)).toEqual(viaPath.map((e) => e.text));
  });

  it('pastText puts the previous final in the next segment\'s prompt', async () => {
    const { x } = join2(en5, 2, en1);
    const first = (es: LiveEvent[]) => es.find((e): e is FinalEvent => e.type === 'final' && e.segment === 1)!;
    const off = first(await collect(listen(Readable.from(chunks(x), { objectMode: true }), { model })));
    const on = first(await collect(listen(Readable.from(chunks(x), { objectMode: true }), { model, pastText: true })));
    expect(on.step!.promptTokens).toBeGreaterThan(off.step!.promptTokens);
  });
});

describe('listen(): backpressure, abort, errors', () => {
  it('a consumer that does not read gets coalesced partials and every final', async () => {
    const { x } = join2(en21, 2, en5);
    const t = listen(Readable.from(chunks(x), { objectMode: true }), { model });
    // Do not read until the input has been processed.
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (t.writableFinished) {
          clearInterval(poll);
          resolve();
        }
      }, 20);
    });
    await sleep(50);
    expect(t.queuedEvents).toBeLessThanOrEqual(2);
    const late = await collect(t);
    expect(late.filter((e) => e.type === 'final').map((e) => e.segment)).toEqual([0, 1]);
    expect(late.filter((e) => e.type === 'partial').length).toBeLessThanOrEqual(1);
    const eager = await collect(listen(Readable.from(chunks(x), { objectMode: true }), { model }));
    expect(eager.filter((e) => e.type === 'partial').length).toBeGreaterThan(5);
  });

  it('an abort mid-stream rejects with ABORTED and frees the native session', async () => {
    const base = liveObjects();
    const ac = new AbortController();
    const t = listen(Readable.from(chunks(en21), { objectMode: true }), { model, signal: ac.signal, exact: true, endpoint: false });
    let partials = 0;
    const err = await (async () => {
      try {
        for await (const e of t) {
          if ((e as LiveEvent).type === 'partial' && ++partials === 2) ac.abort();
        }
      } catch (e) {
        return e as { code?: string; name?: string };
      }
      return undefined;
    })();
    expect(err).toMatchObject({ code: 'ABORTED', name: 'AbortError' });
    for (let i = 0; i < 100 && liveObjects().sessions !== base.sessions; i++) await sleep(10);
    expect(liveObjects()).toEqual(base);
  });

  it('an abort while a step runs stops the native call (cancel) and frees everything', async () => {
    const base = liveObjects();
    const ac = new AbortController();
    const t = listen(Readable.from(chunks(en21), { objectMode: true }), { model, signal: ac.signal, maxNewTokens: 200, exact: true, endpoint: false });
    setTimeout(() => ac.abort(), 150);
    await expect(collect(t)).rejects.toMatchObject({ code: 'ABORTED' });
    for (let i = 0; i < 100 && liveObjects().sessions !== base.sessions; i++) await sleep(10);
    expect(liveObjects()).toEqual(base);
  });

  it('bad input is a coded error, and nothing leaks', async () => {
    const base = liveObjects();
    await expect(collect(listen(Readable.from([Buffer.from('not a wav file at all, not even close')]), { model }))).rejects.toMatchObject({ code: 'UNSUPPORTED_AUDIO_FORMAT' });
    await expect(collect(listen(Readable.from(chunks(en5)), { model, chunkSeconds: 0 }))).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(collect(listen(Readable.from(chunks(en5)), { model, language: 'Klingon' }))).rejects.toMatchObject({ code: 'UNSUPPORTED_LANGUAGE' });
    await expect(collect(listen(Readable.from(chunks(en5)), { model, raw: { sampleRate: 0, channels: 1, encoding: 's16le' } }))).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(collect(listen(Readable.from(chunks(en5)), { model, raw: { sampleRate: 16000, channels: 1, encoding: 's16le' } }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(collect(listen(Readable.from([1, 2, 3]), { model }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(collect(listen(42 as unknown as string, { model }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const nan = new Float32Array(16000 * 3);
    nan.fill(0.1);
    nan[20000] = NaN;
    await expect(collect(listen(Readable.from(chunks(nan), { objectMode: true }), { model, endpoint: false }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    for (let i = 0; i < 100 && liveObjects().sessions !== base.sessions; i++) await sleep(10);
    expect(liveObjects()).toEqual(base);
  });

  it('two live streams on one model run at once and give the events each gives alone', async () => {
    const alone = await collect(listen(Readable.from(chunks(en5), { objectMode: true }), { model }));
    const [a, b] = await Promise.all([
      collect(listen(Readable.from(chunks(en5), { objectMode: true }), { model })),
      collect(listen(Readable.from(chunks(en5, 3000), { objectMode: true }), { model })),
    ]);
    const strip = (es: LiveEvent[]) => es.map((e) => [e.type, e.text]);
    expect(strip(a)).toEqual(strip(alone));
    expect(strip(b)).toEqual(strip(alone));
  });
});

describe('Endpointer', () => {
  function run(x: Float32Array, opts = {}): EndpointEvent[] {
    const ep = new Endpointer(opts);
    const out: EndpointEvent[] = [];
    for (let i = 0; i < x.length; i += 999) out.push(...ep.push(x.subarray(i, i + 999)));
    out.push(...ep.end());
    return out;
  }

  it('segments tile the speech: audio events add up to each segment, cuts inside the pause', () => {
    const { x, gapStart, gapEnd } = join2(en5, 1.5, en5);
    const ev = run(x);
    const starts = ev.filter((e) => e.type === 'start');
    const ends = ev.filter((e): e is Extract<EndpointEvent, { type: 'end' }> => e.type === 'end');
    expect(starts).toHaveLength(2);
    expect(ends[0]!.reason).toBe('pause');
    expect(ends).toHaveLength(2);
    expect(ends[0]!.sample).toBeGreaterThan(voicedSpan(x.subarray(0, gapStart))[1]);
    expect(ends[0]!.sample).toBeLessThan(gapEnd);
  });

  it('a segment longer than the maximum is cut at its quietest frame, never past the maximum', () => {
    // Speech with a quiet dip at 3.2 s inside a 4 s limit: the cut goes there.
    const x = new Float32Array(16000 * 10);
    for (let i = 0; i < x.length; i++) x[i] = 0.3 * Math.sin(i / 9) * (i > 51200 && i < 51200 + 800 ? 0.02 : 1);
    const ev = run(x, { maxSegmentSeconds: 4, searchSeconds: 2 });
    const ends = ev.filter((e): e is Extract<EndpointEvent, { type: 'end' }> => e.type === 'end');
    expect(ends[0]!.reason).toBe('length');
    expect(ends[0]!.sample).toBeGreaterThanOrEqual(51200);
    expect(ends[0]!.sample).toBeLessThanOrEqual(51200 + 800);
    const starts = ev.filter((e): e is Extract<EndpointEvent, { type: 'start' }> => e.type === 'start');
    for (let k = 1; k < starts.length; k++) expect(starts[k]!.sample - starts[k - 1]!.sample).toBeLessThanOrEqual(4 * 16000);
  });

  it('rejects bad options', () => {
    expect(() => new Endpointer({ minSilenceMs: -1 })).toThrow(/minSilenceMs/);
    expect(() => new Endpointer({ maxSegmentSeconds: NaN })).toThrow(/maxSegmentSeconds/);
  });
});

describe('rustasr listen, and the offline segmenter at the CLI', () => {
  beforeAll(() => ensureDist(join('cli', 'listen.js')));
  const env = () => ({ ...process.env, RUSTASR_OFFLINE: '1', RUSTASR_CACHE_DIR: join(scratch, 'cache') });

  it('jsonl events from a file and from stdin; text prints the finals; exact gives the official final', async () => {
    const wav = goldenPath('audio', 'en_5s.wav');
    const j = await runCli(['listen', wav, '--model', MODEL_DIR, '--format', 'jsonl'], env());
    expect(j.code).toBe(0);
    const events = j.stdout.trim().split('\n').map((l) => JSON.parse(l) as LiveEvent);
    expect(events[events.length - 1]!.type).toBe('final');
    const viaApi = await collect(listen(wav, { model }));
    expect(events.map((e) => e.text)).toEqual(viaApi.map((e) => e.text));
    const t = await runCli(['listen', '-', '--model', MODEL_DIR, '--format', 'text', '--exact', '--no-endpoint'], env(), wav);
    expect(t.code).toBe(0);
    const official = JSON.parse(readFileSync(goldenPath('streaming', 'tiny-a__stream__en_5s__chunk2.0.json'), 'utf8')) as { final: { text: string } };
    expect(t.stdout).toBe(official.final.text + '\n');
    const bad = await runCli(['listen', wav, '--model', MODEL_DIR, '--format', 'xml'], env());
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/INVALID_OPTION/);
  });

  it('--max-segment-seconds is a maximum, and no cue but the last is shorter than 0.5 s', async () => {
    const silentStart = new Float32Array(16000 * 2 + en5.length);
    silentStart.set(en5, 16000 * 2); // a quiet opening: the old search cut there again and again
    const file = join(scratch, 'quiet-start.wav');
    writeFileSync(file, wavFromSamples(silentStart));
    const r = await runCli(['infer', file, '--model', MODEL_DIR, '--max-new-tokens', '2', '--max-segment-seconds', '3', '--format', 'json'], env());
    expect(r.code).toBe(0);
    const segs = (JSON.parse(r.stdout) as { segments: { start: number; end: number }[] }).segments;
    expect(segs.length).toBeGreaterThanOrEqual(Math.ceil(silentStart.length / 16000 / 3));
    expect(segs.length).toBeLessThanOrEqual(5);
    segs.forEach((s, i) => {
      expect(s.end - s.start).toBeLessThanOrEqual(3 + 1e-9);
      if (i < segs.length - 1) expect(s.end - s.start).toBeGreaterThanOrEqual(0.5);
    });
    const tooShort = await runCli(['infer', file, '--model', MODEL_DIR, '--max-segment-seconds', '0.1'], env());
    expect(tooShort.code).toBe(2);
    expect(tooShort.stderr).toMatch(/INVALID_OPTION/);
  });
});
