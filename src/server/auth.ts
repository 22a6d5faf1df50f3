// API-key check: `Authorization: Bearer <key>`, compared in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

import { HttpError } from './errors.js';

/** Hashing both sides first gives equal-length inputs, so neither the key's length nor its bytes leak through timing. */
const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** A checker for one key: throws HttpError 401 unless the request carries it. */
export function bearerCheck(key: string): (req: IncomingMessage) => void {
  const want = digest(key);
  return (req) => {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer[ ]+(.+)$/i.exec(header);
    const given = digest(m?.[1]?.trim() ?? '');
    // timingSafeEqual always runs, also without a header, so a missing key costs the same as a wrong one.
    if (!timingSafeEqual(given, want) || m === null) {
      throw new HttpError(
        401,
        'invalid_api_key',
        m === null ? 'missing API key: send Authorization: Bearer <key>' : 'incorrect API key provided',
        null,
        { 'www-authenticate': 'Bearer' },
      );
    }
  };
}
