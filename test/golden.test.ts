// Golden parity: every stage of the engine against tensors computed by the official Qwen3-ASR code.
// The golden root comes from RUSTASR_GOLDEN_DIR (default ../shared/golden) and the cases from its
// cases/index.json, so any golden set in the same layout runs unchanged. Each stage is fed the golden
// input of that stage; tolerances are read from each case's JSON (the golden README's values).
import { afterAll, describe, expect, it } from 'vitest';

import { Model, checkDevice, devices, type Device } from '../src/index.js';
import { nativeDev } from '../src/native.js';
import { buildPrompt } from '../src/text/prompt.js';
import { listCases, loadCase, type GoldenCase } from './helpers/golden.js';
import { checkEncoder, checkEndToEnd, checkMel, checkPrefillDecode } from './helpers/parity.js';

/** The device the golden cases load on: $RUSTASR_TEST_DEVICE (auto | cpu | cuda | metal), default 'auto'. */
const DEVICE: Device = checkDevice(process.env['RUSTASR_TEST_DEVICE'] || undefined);

const models = new Map<string, Promise<Model>>();
/** The case's model on DEVICE; with a CPU kernel named, on the CPU with that kernel. */
function modelFor(c: GoldenCase, kernel?: string): Promise<Model> {
  const device: Device = kernel === undefined ? DEVICE : 'cpu';
  const key = `${c.modelDir}#${device}#${kernel ?? 'auto'}`;
  let m = models.get(key);
  if (!m) {
    m = Model.load(c.modelDir, { kernel: (kernel ?? 'auto') as 'auto', device }).then((model) => model.ready());
    models.set(key, m);
  }
  return m;
}
afterAll(async () => {
  for (const m of models.values()) (await m).dispose();
});

const cases = listCases();

describe.each(cases)('golden case %s', (name) => {
  it(`runs on the device asked for ($RUSTASR_TEST_DEVICE = ${DEVICE})`, async () => {
    // 'auto' picks the first usable GPU kind that devices() reports, else the CPU.
    const gpu = (await devices()).find((d) => d.kind !== 'cpu' && d.available);
    const want = DEVICE === 'auto' ? (gpu?.kind ?? 'cpu') : DEVICE;
    expect((await modelFor(await loadCase(name))).device).toBe(want);
  });
  it('wav -> mel', async () => {
    const c = await loadCase(name);
    await checkMel(await modelFor(c), c);
  });

  it('golden mel -> encoder (conv stem + positions, ln_post, audio embeddings)', async () => {
    const c = await loadCase(name);
    await checkEncoder(await modelFor(c), c);
  });

  it('prompt ids', async () => {
    const c = await loadCase(name);
    const model = await modelFor(c);
    const p = buildPrompt(model.tokenizer, {
      context: c.json.context,
      language: c.json.force_language ?? undefined,
      audioTokens: c.json.n_audio_tokens,
    });
    expect(Array.from(p.ids)).toEqual(c.ids('input_ids'));
    expect(p.audioPadStart).toBe(c.json.audio_pad_start);
  });

  it('golden prompt + embeddings -> prefill logits, then every decode step (KV cache, positions)', async () => {
    const c = await loadCase(name);
    await checkPrefillDecode(await modelFor(c), c);
  });

  it('wav -> 16 greedy ids end to end', async () => {
    const c = await loadCase(name);
    await checkEndToEnd(await modelFor(c), c);
  });
});

// Every matrix-vector kernel this CPU supports must keep decode-time parity (forced one by one).
describe.each(nativeDev().cpuKernels())('kernel %s', (kernel) => {
  it.each(cases)('prefill + decode steps of %s', async (name) => {
    const c = await loadCase(name);
    const model = await modelFor(c, kernel);
    expect(model.info.kernel).toBe(kernel);
    await checkPrefillDecode(model, c, false);
  });
});
