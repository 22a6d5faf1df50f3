// What the server tests share: an OpenAI client on a test server, and a golden case as SDK options and as
// OpenAI request fields (the same language and context both ways, so the two answers can be compared).
import OpenAI from 'openai';

import type { RustAsrServer } from '../../src/server/index.js';
import type { GoldenIndexEntry } from './golden.js';

/** The official OpenAI client on a test server (no retries: a test sees every status as it is). */
export function client(s: RustAsrServer, apiKey = 'unused'): OpenAI {
  return new OpenAI({ baseURL: `${s.url}/v1`, apiKey, maxRetries: 0 });
}

/** transcribe()/recognize() options for a case: its forced language and context, `maxNewTokens` tokens. */
export const caseOptions = (c: GoldenIndexEntry, maxNewTokens: number) => ({
  maxNewTokens,
  ...(c.force_language !== null ? { language: c.force_language } : {}),
  ...(c.context !== '' ? { context: c.context } : {}),
});

/** The OpenAI request fields for a case (language as given in the case, context as prompt). */
export const caseFields = (c: GoldenIndexEntry) => ({
  ...(c.force_language !== null ? { language: c.force_language } : {}),
  ...(c.context !== '' ? { prompt: c.context } : {}),
});
