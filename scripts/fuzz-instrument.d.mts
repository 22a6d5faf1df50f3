// Types for scripts/fuzz-instrument.mjs (used by the TypeScript tests).
export function instrumentSource(
  ts: typeof import('typescript'),
  code: string,
  name: string,
): { code: string; counters: number; lines: number[] };
export function registerCoverageHooks(urls: Iterable<string>): void;
