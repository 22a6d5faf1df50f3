// A synthetic model that loops for ever: tiny-a with its decoder layers silenced (o_proj and down_proj zero,
// so the residual stream is the current token's embedding) and a few embedding / lm_head rows set so that
// the greedy next token depends only on the current one: the last prompt token -> chain[0] -> chain[1] ...
// -> chain[last] -> chain[loopFrom]. Every other weight stays as it is.
import { cpSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readSafetensors, writeSafetensors, type TensorEntry } from './safetensors.js';

function bf16(v: number): number {
  const f = new Float32Array([v]);
  return new Uint32Array(f.buffer)[0]! >>> 16;
}

/**
 * Writes the looping copy of `srcDir` into a new temporary directory and returns it. `start` is the last
 * prompt token's id; `chain` the ids generated in order; after chain[chain.length - 1] comes chain[loopFrom].
 */
export function makeLoopingModel(srcDir: string, start: number, chain: readonly number[], loopFrom: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'rustasr-looping-'));
  for (const f of readdirSync(srcDir)) if (f !== 'model.safetensors') cpSync(join(srcDir, f), join(dir, f));
  const st = readSafetensors(join(srcDir, 'model.safetensors'));
  const data = Buffer.from(st.data);
  const entry = (name: string) => st.header[name] as TensorEntry;
  const zero = (name: string) => data.fill(0, entry(name).data_offsets[0], entry(name).data_offsets[1]);
  for (const name of Object.keys(st.header)) {
    if (/^thinker\.model\.layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)\.weight$/.test(name)) zero(name);
  }
  const emb = entry('thinker.model.embed_tokens.weight');
  const head = entry('thinker.lm_head.weight');
  const hidden = emb.shape[1]!;
  if (chain.length + 1 > hidden) throw new Error('chain longer than the hidden size');
  const setRow = (e: TensorEntry, row: number, values: Map<number, number>) => {
    const base = e.data_offsets[0] + row * hidden * 2;
    for (let i = 0; i < hidden; i++) data.writeUInt16LE(bf16(values.get(i) ?? 0), base + 2 * i);
  };
  // Token `from` gets basis vector k; the row of the token that follows it gets weight on k.
  const order = [start, ...chain];
  const headRows = new Map<number, Map<number, number>>();
  order.forEach((tok, k) => {
    setRow(emb, tok, new Map([[k, 1]]));
    const next = k + 1 < order.length ? order[k + 1]! : chain[loopFrom]!;
    const row = headRows.get(next) ?? new Map<number, number>();
    row.set(k, 100);
    headRows.set(next, row);
  });
  for (const [tok, row] of headRows) setRow(head, tok, row);
  writeSafetensors(join(dir, 'model.safetensors'), { header: st.header, data });
  return dir;
}
