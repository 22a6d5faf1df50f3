// The official streaming loop (shared/golden/streaming): live recognition's exact mode must reproduce every
// step of every case exactly — prompt ids, generated ids, texts and the loop's state after every call — on
// every CPU kernel path; the scripted cases replace the model's generate step with the recorded texts.
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';

import { afterAll, describe, expect, it } from 'vitest';

import { engineStep } from '../src/core/live.js';
import { Model } from '../src/core/model.js';
import { OfficialStreaming, type GenerateFn, type GenerateResult } from '../src/core/official-streaming.js';
import { listen, loadAudio, type LiveEvent } from '../src/index.js';
import { nativeDev } from '../src/native.js';
import { goldenPath } from './helpers/golden.js';

interface GenerateCall {
  chunk_id: number;
  prefix: string;
  prompt_text: string;
  audio_samples: number;
  n_audio_tokens: number;
  prompt_ids: number[];
  generated_ids?: number[];
  gen_text: string;
  raw_decoded_after: string;
  rollback_derived?: { cur_ids: number[]; end_idx: number; k: number };
}

interface StreamingCall {
  call: number;
  kind: 'streaming_transcribe' | 'finish_streaming_transcribe';
  piece_samples: number;
  fed_samples_total: number;
  state_after: {
    chunk_id: number;
    language: string;
    text: string;
    raw_decoded: string;
    buffer_samples: number;
    audio_accum_samples: number;
  };
  generate_calls: GenerateCall[];
}

interface StreamingCase {
  case: string;
  model_dir: string;
  audio: string;
  n_samples: number;
  init_streaming_state: {
    context: string;
    language: string | null;
    unfixed_chunk_num: number;
    unfixed_token_num: number;
    chunk_size_sec: number;
    chunk_size_samples: number;
  };
  generation?: { max_new_tokens?: number } | null;
  scripted_gen_texts?: string[];
  final: { language: string; text: string; chunk_id: number };
  calls: StreamingCall[];
}

const index = JSON.parse(readFileSync(goldenPath('streaming', 'index.json'), 'utf8')) as { cases: { case: string; kind: string }[] };
const CASES = index.cases.map((c) => c.case);
const KIND = new Map(index.cases.map((c) => [c.case, c.kind]));
const load = (name: string): StreamingCase => JSON.parse(readFileSync(goldenPath('streaming', `${name}.json`), 'utf8')) as StreamingCase;

const models = new Map<string, Model>();
async function modelFor(dir: string, kernel: string): Promise<Model> {
  const key = `${dir}|${kernel}`;
  let m = models.get(key);
  if (!m) {
    m = await Model.load(goldenPath(dir), { threads: 2, kernel: kernel as never });
    await m.ready();
    models.set(key, m);
  }
  return m;
}
afterAll(() => {
  for (const m of models.values()) m.dispose();
});

function maxNewTokens(c: StreamingCase): number {
  return c.generation?.max_new_tokens ?? 32;
}

/** Replays a case through OfficialStreaming with `generate`, checking every call against the reference. */
async function replay(c: StreamingCase, model: Model, generate: GenerateFn, results: GenerateResult[]): Promise<void> {
  const init = c.init_streaming_state;
  const audio = await loadAudio(goldenPath(c.audio), 16000);
  expect(audio.length).toBe(c.n_samples);
  const tok = model.tokenizer;
  const loop = new OfficialStreaming(tok, {
    context: init.context,
    language: init.language ?? undefined,
    supportedLanguages: model.info.supportLanguages,
    unfixedChunks: init.unfixed_chunk_num,
    unfixedTokens: init.unfixed_token_num,
    chunkSeconds: init.chunk_size_sec,
  }, generate);
  expect(loop.chunkSamples).toBe(init.chunk_size_samples);
  const padId = model.info.audioTokenId;
  let fed = 0;
  for (const call of c.calls) {
    const before = results.length;
    const steps =
      call.kind === 'streaming_transcribe'
        ? await loop.push(audio.subarray(fed, fed + call.piece_samples))
        : [await loop.finish()].filter((s) => s !== null);
    fed += call.piece_samples;
    expect(fed).toBe(call.fed_samples_total);
    expect(steps.length, `call ${call.call}: steps that ran the model`).toBe(call.generate_calls.length);
    steps.forEach((s, i) => {
      const g = call.generate_calls[i]!;
      const where = `call ${call.call} chunk ${g.chunk_id}`;
      expect(s!.chunkId, where).toBe(g.chunk_id);
      expect(s!.prefix, `${where}: prefix`).toBe(g.prefix);
      if (g.rollback_derived) {
        expect(s!.rollback, `${where}: rollback`).toEqual({ curIds: g.rollback_derived.cur_ids, endIdx: g.rollback_derived.end_idx, k: g.rollback_derived.k });
      }
      expect(s!.request.audio.length, `${where}: audio`).toBe(g.audio_samples);
      expect(s!.request.prompt.before + '<|audio_pad|>' + s!.request.prompt.after, `${where}: prompt text`).toBe(g.prompt_text);
      const r = results[before + i]!;
      const nAudio = r.audioTokens ?? g.n_audio_tokens;
      expect(nAudio, `${where}: audio tokens`).toBe(g.n_audio_tokens);
      const ids = [...s!.request.prompt.head, ...new Array<number>(nAudio).fill(padId), ...s!.request.prompt.tail];
      expect(ids, `${where}: prompt ids`).toEqual(g.prompt_ids);
      if (g.generated_ids) expect(r.ids, `${where}: generated ids`).toEqual(g.generated_ids);
      expect(r.text, `${where}: generated text`).toBe(g.gen_text);
      expect(s!.rawDecoded, `${where}: raw`).toBe(g.raw_decoded_after);
    });
    const st = call.state_after;
    expect({ chunk_id: loop.chunkId, language: loop.language, text: loop.text, raw_decoded: loop.rawDecoded, buffer_samples: loop.buffered, audio_accum_samples: loop.accumulated }, `state after call ${call.call}`).toEqual(st);
  }
  expect({ language: loop.language, text: loop.text, chunk_id: loop.chunkId }).toEqual(c.final);
}

/** The engine as the generate step (one native session, its audio kept between calls). */
function engineGenerate(model: Model, c: StreamingCase, results: GenerateResult[]): { generate: GenerateFn; dispose: () => void } {
  const session = model.createSession();
  let first = true;
  const generate: GenerateFn = async (req) => {
    const r = await engineStep(model, session, req.newAudio, req.prompt, {
      reset: first,
      incremental: false,
      maxNewTokens: maxNewTokens(c),
      checkAbort: () => {},
    });
    first = false;
    const out = { text: r.text, ids: r.ids, audioTokens: r.start.audioTokens };
    results.push(out);
    return out;
  };
  return { generate, dispose: () => session.dispose() };
}

function scriptedGenerate(c: StreamingCase, results: GenerateResult[]): GenerateFn {
  const texts = [...(c.scripted_gen_texts ?? [])];
  return async () => {
    const text = texts.shift();
    if (text === undefined) throw new Error('the script ran out of texts');
    const out = { text };
    results.push(out);
    return out;
  };
}

const KERNELS = nativeDev().cpuKernels();

describe('golden streaming index', () => {
  it('lists cases with JSON files', () => {
    expect(CASES.length).toBeGreaterThan(0);
    for (const name of CASES) expect(load(name).case).toBe(name);
  });
});

describe.each(KERNELS)('exact mode, kernel %s', (kernel) => {
  it.each(CASES)('%s: every step of the official loop', async (name) => {
    const c = load(name);
    const model = await modelFor(c.model_dir, kernel);
    expect(model.info.kernel).toBe(kernel);
    const results: GenerateResult[] = [];
    if (KIND.get(name) === 'scripted') {
      await replay(c, model, scriptedGenerate(c, results), results);
    } else {
      const g = engineGenerate(model, c, results);
      try {
        await replay(c, model, g.generate, results);
      } finally {
        g.dispose();
      }
    }
  });
});

describe('listen({ exact: true, endpoint: false }) gives the official texts', () => {
  const modelCases = CASES.filter((n) => KIND.get(n) === 'model');
  it.each(modelCases)('%s: one partial per model step, one final', async (name) => {
    const c = load(name);
    const model = await modelFor(c.model_dir, 'auto');
    const init = c.init_streaming_state;
    const audio = await loadAudio(goldenPath(c.audio), 16000);
    // Fed as the reference was: 500 ms pieces of samples.
    const pieces: { samples: Float32Array; sampleRate: number }[] = [];
    for (let i = 0; i < audio.length; i += 8000) pieces.push({ samples: audio.slice(i, i + 8000), sampleRate: 16000 });
    const events: LiveEvent[] = [];
    for await (const e of listen(Readable.from(pieces, { objectMode: true }), {
      model,
      exact: true,
      endpoint: false,
      chunkSeconds: init.chunk_size_sec,
      unfixedChunks: init.unfixed_chunk_num,
      unfixedTokens: init.unfixed_token_num,
      maxNewTokens: maxNewTokens(c),
      language: init.language ?? undefined,
    })) {
      events.push(e as LiveEvent);
    }
    const steps = c.calls.filter((k) => k.kind === 'streaming_transcribe' && k.generate_calls.length > 0).map((k) => k.state_after.text);
    const partials = events.filter((e) => e.type === 'partial');
    const finals = events.filter((e) => e.type === 'final');
    expect(partials.map((e) => e.text)).toEqual(steps);
    expect(finals).toHaveLength(1);
    expect(finals[0]!.text).toBe(c.final.text);
    expect(finals[0]!.language).toBe(c.final.language === '' ? undefined : c.final.language);
    expect(events[events.length - 1]!.type).toBe('final');
  });
});
