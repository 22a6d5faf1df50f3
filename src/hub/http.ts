// Minimal HTTP(S) GET with redirects, an idle timeout, a deadline on the response head, a minimum-speed
// rule and abort support, on node:http / node:https only.
import * as http from 'node:http';
import * as https from 'node:https';

import { RustAsrError } from '../errors.js';

/** One response of a redirect chain (the body of redirects is discarded). */
export interface HopInfo {
  url: URL;
  status: number;
  headers: http.IncomingHttpHeaders;
}

export interface HttpGetResult {
  /** The final (non-redirect) response; its body must be consumed or destroyed by the caller. */
  res: http.IncomingMessage;
  status: number;
  url: URL;
  /** Every response in order, redirects first, the final one last. */
  chain: HopInfo[];
}

export interface HttpGetOptions {
  headers?: Record<string, string>;
  /** Sent only to URLs with this origin (never to a CDN a redirect points to). */
  authorization?: { origin: string; value: string };
  signal?: AbortSignal;
  /** Socket idle timeout in ms (while connecting, waiting for headers and reading the body). */
  timeoutMs: number;
  maxRedirects: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** Errors the downloader may retry (network failures, timeouts, 5xx, truncated bodies). */
export const RETRYABLE = new WeakSet<Error>();

export function retryable(err: RustAsrError): RustAsrError {
  RETRYABLE.add(err);
  return err;
}

export function abortedError(): RustAsrError {
  return new RustAsrError('ABORTED', 'download aborted');
}

function requestOnce(url: URL, headers: Record<string, string>, opts: HttpGetOptions): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(abortedError());
      return;
    }
    const mod = url.protocol === 'https:' ? https : http;
    // The whole response head must arrive within timeoutMs: the idle timeout below alone never trips on a
    // server that trickles its headers a byte at a time.
    const headDeadline = setTimeout(() => {
      req.destroy(retryable(new RustAsrError('DOWNLOAD_FAILED', `${url.origin}: no complete response headers within ${opts.timeoutMs} ms`)));
    }, opts.timeoutMs);
    const req = mod.request(url, { method: 'GET', headers, signal: opts.signal }, (res) => {
      clearTimeout(headDeadline);
      resolve(res);
    });
    req.on('close', () => clearTimeout(headDeadline));
    req.setTimeout(opts.timeoutMs, () => {
      req.destroy(retryable(new RustAsrError('DOWNLOAD_FAILED', `${url.origin}: no data for ${opts.timeoutMs} ms`)));
    });
    req.on('error', (err) => {
      if (opts.signal?.aborted) reject(abortedError());
      else if (err instanceof RustAsrError) reject(err);
      else reject(retryable(new RustAsrError('DOWNLOAD_FAILED', `GET ${url.href}: ${err.message}`, { cause: err })));
    });
    req.end();
  });
}

/** GETs `url`, following up to maxRedirects redirects (http and https only). */
export async function httpGet(url: URL, opts: HttpGetOptions): Promise<HttpGetResult> {
  const chain: HopInfo[] = [];
  let current = url;
  for (let hop = 0; ; hop++) {
    if (current.protocol !== 'http:' && current.protocol !== 'https:') {
      throw new RustAsrError('DOWNLOAD_FAILED', `refusing to follow a redirect to ${current.protocol} (${current.href})`);
    }
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.authorization && current.origin === opts.authorization.origin) headers['authorization'] = opts.authorization.value;
    const res = await requestOnce(current, headers, opts);
    const status = res.statusCode ?? 0;
    chain.push({ url: current, status, headers: res.headers });
    const location = res.headers.location;
    if (REDIRECTS.has(status) && location !== undefined) {
      discardBody(res);
      if (hop >= opts.maxRedirects) {
        throw new RustAsrError('DOWNLOAD_FAILED', `GET ${url.href}: more than ${opts.maxRedirects} redirects`);
      }
      try {
        current = new URL(location, current);
      } catch (err) {
        throw new RustAsrError('DOWNLOAD_FAILED', `GET ${current.href}: bad redirect location ${JSON.stringify(location)}`, { cause: err });
      }
      continue;
    }
    return { res, status, url: current, chain };
  }
}

/** The minimum-speed rule: at least minBytesPerSecond on average over every window of windowMs. */
export interface SpeedRule {
  /** 0 disables the rule. */
  minBytesPerSecond: number;
  windowMs: number;
}

/**
 * Watches a transfer: count bytes with add(); when a window of rule.windowMs ends with fewer than
 * minBytesPerSecond * windowMs / 1000 bytes, onSlow is called once with a description. The idle timeout
 * alone never trips on a server that sends a byte now and then. stop() when the transfer ends.
 */
export class SpeedGuard {
  private bytes = 0;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(rule: SpeedRule, onSlow: (why: string) => void) {
    if (!(rule.minBytesPerSecond > 0)) return;
    const need = Math.ceil((rule.minBytesPerSecond * rule.windowMs) / 1000);
    this.timer = setInterval(() => {
      if (this.bytes < need) {
        this.stop();
        onSlow(`${this.bytes} bytes in ${rule.windowMs} ms, below the minimum speed of ${rule.minBytesPerSecond} bytes/s`);
      }
      this.bytes = 0;
    }, rule.windowMs);
    this.timer.unref();
  }

  add(n: number): void {
    this.bytes += n;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/** Reads a whole (small) response body, refusing more than maxBytes and transfers slower than `speed`. */
export async function readBody(res: http.IncomingMessage, maxBytes: number, signal?: AbortSignal, speed?: SpeedRule): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  const guard = speed
    ? new SpeedGuard(speed, (why) => res.destroy(retryable(new RustAsrError('DOWNLOAD_FAILED', `reading response: too slow (${why})`))))
    : undefined;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      guard?.add(chunk.length);
      n += chunk.length;
      if (n > maxBytes) {
        res.destroy();
        throw new RustAsrError('DOWNLOAD_FAILED', `response body larger than ${maxBytes} bytes`);
      }
      parts.push(chunk);
    }
  } catch (err) {
    if (signal?.aborted) throw abortedError();
    if (err instanceof RustAsrError) throw err;
    throw retryable(new RustAsrError('DOWNLOAD_FAILED', `reading response: ${(err as Error).message}`, { cause: err }));
  } finally {
    guard?.stop();
  }
  return Buffer.concat(parts);
}

/**
 * Discards a response body we do not read (a redirect, an error page). A short one (announced at most 64 KiB)
 * is drained, so that the connection can be reused; anything else is cut off: a hostile server could
 * otherwise stream an endless body in the background.
 */
export function discardBody(res: http.IncomingMessage): void {
  const len = header(res.headers, 'content-length');
  if (len !== undefined && /^\d+$/.test(len) && Number(len) <= 64 * 1024) res.resume();
  else res.destroy();
}

/** A header's single value (first of a repeated header). */
export function header(h: http.IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}
