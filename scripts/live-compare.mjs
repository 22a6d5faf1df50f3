#!/usr/bin/env node
// Fast mode against exact mode on every golden streaming case (shared/golden/streaming, model cases): the same
// audio in the same 500 ms pieces, the same options (endpointing off, chunk size, unfixed chunks/tokens, 32 tokens
// per step), one model. Prints, per case: equal finals, the token agreement of the partials (the share of the
// exact partial's tokens that the fast partial has at the same positions), and the first step that differs.
//
//   node scripts/live-compare.mjs [--json]        (needs npm run build; golden data in ../shared/golden)
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const golden = process.env.RUSTASR_GOLDEN_DIR ? resolve(process.env.RUSTASR_GOLDEN_DIR) : resolve(root, '..', 'shared', 'golden');
const { listen, loadAudio, loadModel } = await import(pathToFileURL(join(root, 'dist', 'index.js')).href);

const index = JSON.parse(readFileSync(join(golden, 'streaming', 'index.json'), 'utf8'));
const models = new Map();
const rows = [];
for (const entry of index.cases.filter((c) => c.kind === 'model')) {
  const c = JSON.parse(readFileSync(join(golden, 'streaming', `${entry.case}.json`), 'utf8'));
  let model = models.get(c.model_dir);
  if (!model) {
    model = await loadModel(join(golden, c.model_dir), { threads: 2 });
    await model.ready();
    models.set(c.model_dir, model);
  }
  const audio = await loadAudio(join(golden, c.audio), 16000);
  const init = c.init_streaming_state;
  const run = async (exact) => {
    const pieces = [];
    for (let i = 0; i < audio.length; i += 8000) pieces.push({ samples: audio.slice(i, i + 8000), sampleRate: 16000 });
    const out = [];
    for await (const e of listen(Readable.from(pieces, { objectMode: true }), {
      model,
      exact,
      endpoint: false,
      chunkSeconds: init.chunk_size_sec,
      unfixedChunks: init.unfixed_chunk_num,
      unfixedTokens: init.unfixed_token_num,
      maxNewTokens: c.generation?.max_new_tokens ?? 32,
      language: init.language ?? undefined,
    })) out.push(e);
    return out;
  };
  const exact = await run(true);
  const fast = await run(false);
  const tok = model.tokenizer;
  const agree = (a, b) => {
    const x = tok.encode(a);
    const y = tok.encode(b);
    let same = 0;
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] === y[i]) same++;
    return { same, of: x.length };
  };
  const ep = exact.filter((e) => e.type === 'partial');
  const fp = fast.filter((e) => e.type === 'partial');
  let same = 0;
  let of = 0;
  let firstDiff = null;
  for (let k = 0; k < Math.min(ep.length, fp.length); k++) {
    const a = agree(ep[k].text, fp[k].text);
    same += a.same;
    of += a.of;
    if (firstDiff === null && ep[k].text !== fp[k].text) firstDiff = k;
  }
  const ef = exact.find((e) => e.type === 'final');
  const ff = fast.find((e) => e.type === 'final');
  rows.push({
    case: entry.case,
    steps: [ep.length, fp.length],
    partialsEqual: ep.filter((e, k) => fp[k] && fp[k].text === e.text).length,
    tokenAgreement: of ? same / of : 1,
    firstDifferentStep: firstDiff,
    finalEqual: ef?.text === ff?.text,
    finalAgreement: ef && ff ? agree(ef.text, ff.text) : null,
  });
}
for (const m of models.values()) m.dispose();
if (process.argv.includes('--json')) {
  process.stdout.write(JSON.stringify(rows, null, 1) + '\n');
} else {
  process.stdout.write('case | partials (exact, fast) | equal partials | token agreement | first differing step | final equal\n');
  for (const r of rows) {
    process.stdout.write(`${r.case} | ${r.steps.join(', ')} | ${r.partialsEqual} | ${(100 * r.tokenAgreement).toFixed(1)} % | ${r.firstDifferentStep ?? '-'} | ${r.finalEqual ? 'yes' : `no (${r.finalAgreement.same}/${r.finalAgreement.of} tokens)`}\n`);
  }
  process.stdout.write(`finals equal: ${rows.filter((r) => r.finalEqual).length} of ${rows.length}\n`);
}
