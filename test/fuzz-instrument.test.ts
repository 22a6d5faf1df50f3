// The block-counter instrumentation of the coverage-guided TypeScript fuzzer (scripts/fuzz-instrument.mjs):
// instrumented code computes the same results, and its counters tell apart inputs that take different paths.
import ts from 'typescript';
import { afterEach, describe, expect, it } from 'vitest';

import { instrumentSource } from '../scripts/fuzz-instrument.mjs';

const SOURCE = `
function classify(x, opts) {
  'use strict';
  let out = '';
  if (x < 0) out += 'neg';
  else if (x === 0) out += 'zero';
  for (let i = 0; i < x; i++) out += i % 2 ? 'o' : 'e';
  switch (typeof opts) {
    case 'object':
      out += opts?.tag ?? 'none';
      break;
  }
  const pick = (v) => v && v.length;
  try {
    if (x > 5) throw new Error('big');
  } catch {
    out += '!';
  } finally {
    out += pick(out) || 0;
  }
  return out;
}
`;

type Fn = (x: number, opts?: unknown) => string;

/** Evaluates the (instrumented) source; returns the function and the counters it was given. */
function load(code: string): { fn: Fn; counters: Uint32Array | undefined } {
  let counters: Uint32Array | undefined;
  (globalThis as { __rustasrFuzz?: unknown }).__rustasrFuzz = {
    alloc: (_name: string, n: number) => (counters = new Uint32Array(n)),
  };
  const fn = new Function(`${code}\nreturn classify;`)() as Fn;
  return { fn, counters };
}

afterEach(() => {
  delete (globalThis as { __rustasrFuzz?: unknown }).__rustasrFuzz;
});

describe('fuzz instrumentation', () => {
  const inputs: [number, unknown?][] = [[-3], [0], [3, { tag: 't' }], [4, {}], [9, null], [1, 'x']];

  it('keeps the behaviour of the code', () => {
    const plain = load(SOURCE).fn;
    const { code, counters, lines } = instrumentSource(ts, SOURCE, 'classify.js');
    expect(counters).toBeGreaterThan(15);
    expect(lines).toHaveLength(counters);
    expect(code).toContain("'use strict';\n    __rustasrFuzzCounters["); // after the directive prologue
    const instrumented = load(code).fn;
    for (const [x, o] of inputs) expect(instrumented(x, o)).toBe(plain(x, o));
  });

  it('counts blocks: different paths give different counters, loop trips are counted', () => {
    const { code } = instrumentSource(ts, SOURCE, 'classify.js');
    const { fn, counters } = load(code);
    const run = (x: number, o?: unknown) => {
      counters!.fill(0);
      fn(x, o);
      return Array.from(counters!);
    };
    const neg = run(-3);
    const zero = run(0);
    const three = run(3, { tag: 't' });
    const nine = run(9);
    expect(neg).not.toEqual(zero);
    expect(three).not.toEqual(zero);
    // The function entry runs once per call; the loop body runs x times.
    expect(Math.max(...three)).toBe(3);
    expect(Math.max(...nine)).toBe(9);
    // Same path, same counters.
    expect(run(-3)).toEqual(neg);
    // The catch block is reached only by x > 5.
    const onlyNine = nine.map((c, k) => (c > 0 && three[k] === 0 && zero[k] === 0 && neg[k] === 0 ? k : -1)).filter((k) => k >= 0);
    expect(onlyNine.length).toBeGreaterThan(0);
  });
});
