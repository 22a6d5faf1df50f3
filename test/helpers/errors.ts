import { expect } from 'vitest';

import { RustAsrError } from '../../src/index.js';

/** The RustAsrError `p` rejects with (the test fails if it resolves or rejects with anything else). */
export async function rejection(p: Promise<unknown>): Promise<RustAsrError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(RustAsrError);
    return err as RustAsrError;
  }
  throw new Error('expected a rejection');
}
