// Golden parity on the CUDA backend: the stage checks of golden.test.ts (test/helpers/parity.ts) with every
// case's model loaded on device 'cuda'. Runs only where devices() reports a usable CUDA device (a GPU, its
// driver and the plugin rustasr_cuda.so, built by `npm run build:cuda`); elsewhere the suite is skipped and
// says why. `npm run test:gpu` (scripts/gpu-check.sh) builds the plugin and runs this file.
import { afterAll, describe, expect, it } from 'vitest';

import { Model, devices } from '../src/index.js';
import { listCases, loadCase, type GoldenCase } from './helpers/golden.js';
import { checkEncoder, checkEndToEnd, checkMel, checkPrefillDecode } from './helpers/parity.js';

const cuda = (await devices()).find((d) => d.kind === 'cuda');
const usable = cuda?.available === true;
const why = cuda ? cuda.reason : 'devices() did not report cuda';

const models = new Map<string, Promise<Model>>();
function modelFor(c: GoldenCase): Promise<Model> {
  const key = c.modelDir;
  let m = models.get(key);
  if (!m) {
    m = Model.load(c.modelDir, { device: 'cuda' }).then((model) => model.ready());
    models.set(key, m);
  }
  return m;
}
afterAll(async () => {
  for (const m of models.values()) (await m).dispose();
});

describe.skipIf(usable)('golden parity on CUDA', () => {
  it.skip(`no usable CUDA device: ${why}`, () => {});
});

describe.runIf(usable).each(listCases())('golden case %s on CUDA', (name) => {
  it('loads on cuda', async () => {
    const model = await modelFor(await loadCase(name));
    expect(model.info.device).toBe('cuda');
    expect(model.info.deviceName).not.toBe('');
  });

  it('wav -> mel (host) with the CUDA model', async () => {
    const c = await loadCase(name);
    await checkMel(await modelFor(c), c);
  });

  it('golden mel -> encoder (conv stem + positions, ln_post, audio embeddings)', async () => {
    const c = await loadCase(name);
    await checkEncoder(await modelFor(c), c);
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
