// Raw HTTP clients for the server tests: multipart bodies built by hand so a test can cut them short,
// send them slowly, lie in Content-Length, or drop the connection at a chosen point.
import { request, type IncomingMessage, type ClientRequest } from 'node:http';
import { randomBytes } from 'node:crypto';

export interface Part {
  name: string;
  value: string | Buffer;
  filename?: string;
}

/** A multipart/form-data body and its Content-Type. */
export function multipart(parts: Part[]): { body: Buffer; contentType: string; head: (i: number) => Buffer } {
  const boundary = `----rustasr${randomBytes(8).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disp = p.filename === undefined ? `form-data; name="${p.name}"` : `form-data; name="${p.name}"; filename="${p.filename}"`;
    const type = p.filename === undefined ? '' : 'Content-Type: audio/wav\r\n';
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disp}\r\n${type}\r\n`), Buffer.from(p.value), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const body = Buffer.concat(chunks);
  return { body, contentType: `multipart/form-data; boundary=${boundary}`, head: (i) => body.subarray(0, i) };
}

export interface RawResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

/** Reads a whole response. */
export function readResponse(res: IncomingMessage): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    res.on('error', reject);
  });
}

/** Opens a POST with the given headers; the caller writes (part of) the body. */
export function openPost(url: string, headers: Record<string, string | number>): { req: ClientRequest; response: Promise<IncomingMessage> } {
  const req = request(url, { method: 'POST', headers, agent: false });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
  response.catch(() => {});
  return { req, response };
}

/** POSTs a whole multipart body and reads the response. */
export async function postForm(url: string, parts: Part[], headers: Record<string, string> = {}): Promise<RawResponse> {
  const { body, contentType } = multipart(parts);
  const { req, response } = openPost(url, { 'content-type': contentType, 'content-length': body.length, ...headers });
  req.end(body);
  return readResponse(await response);
}

/** GET, returning status, headers and body. */
export function get(url: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (res) => readResponse(res).then(resolve, reject));
    req.on('error', reject);
    req.end();
  });
}

/** Polls `cond` every 10 ms until it holds (fails after `ms`). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 20_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A metric's value from Prometheus text (the sample whose name and labels match exactly), or 0 if absent. */
export function metric(text: string, sample: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(sample + ' ')) return Number(line.slice(sample.length + 1));
  }
  return 0;
}
