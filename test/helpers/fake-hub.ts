// A local stand-in for the Hugging Face hub (127.0.0.1, random port) for the download tests.
//
// Layout as the real hub:
//   GET /api/models/<owner>/<name>/revision/<rev>?blobs=true -> {sha, siblings: [{rfilename, size, blobId, lfs?}]}
//   GET /<owner>/<name>/resolve/<rev>/<file>
//     - LFS files (*.safetensors): 302 to /cdn/<sha256> with X-Linked-Size, X-Linked-Etag and ETag ("<sha256>"),
//       X-Repo-Commit; the CDN serves the bytes with Range support (206 + Content-Range);
//     - other files: 200 with ETag "<git blob sha1>" and Content-Length;
//     - unknown repo: 401 X-Error-Code RepoNotFound; unknown file: 404 X-Error-Code EntryNotFound.
// Hostile behaviours (FakeHubBehaviour): dropped connections, corrupted bytes, Range ignored, files with no
// size or hash at all, trickled bodies, trickled response heads.
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubRequest {
  method: string;
  url: string;
  range: string | undefined;
}

export interface FakeHubBehaviour {
  /** Serve the listing API (default true). */
  api: boolean;
  /** CDN: for the next N requests of a file, close the connection after this many body bytes. */
  dropAfter: Map<string, { bytes: number; times: number }>;
  /** CDN/hub: serve these files with one byte flipped (headers still announce the original). */
  corrupt: Set<string>;
  /** CDN: ignore Range headers (always 200 with the whole file). */
  ignoreRange: boolean;
  /**
   * Files served with no size and no hash anywhere: absent from the listing, and served by the hub itself
   * (no redirect) chunked, without Content-Length, ETag or X-Linked-* headers.
   */
  noSize: Set<string>;
  /** Files whose body is sent `bytes` at a time every `everyMs` ms (a slow or hostile server). */
  trickle: Map<string, { bytes: number; everyMs: number }>;
  /** Files whose response head is sent one byte every `everyMs` ms (it never ends within a test). */
  trickleHead: Map<string, { everyMs: number }>;
}

export interface FakeHub {
  endpoint: string;
  requests: HubRequest[];
  behaviour: FakeHubBehaviour;
  /** Adds (or replaces) a repo: file name -> bytes. */
  addRepo(id: string, files: Record<string, Buffer>): void;
  close(): Promise<void>;
}

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

interface Blob {
  data: Buffer;
  sha256: string;
  gitSha1: string;
  lfs: boolean;
}

function makeBlob(name: string, data: Buffer): Blob {
  const git = createHash('sha1');
  git.update(`blob ${data.length}\0`);
  git.update(data);
  return {
    data,
    sha256: createHash('sha256').update(data).digest('hex'),
    gitSha1: git.digest('hex'),
    lfs: name.endsWith('.safetensors'),
  };
}

function flipped(data: Buffer): Buffer {
  const c = Buffer.from(data);
  const i = Math.floor(c.length / 2);
  c[i] = (c[i] ?? 0) ^ 0xff;
  return c;
}

export async function startFakeHub(): Promise<FakeHub> {
  const repos = new Map<string, Map<string, Blob>>();
  const byHash = new Map<string, { name: string; blob: Blob }>();
  const requests: HubRequest[] = [];
  const behaviour: FakeHubBehaviour = {
    api: true,
    dropAfter: new Map(),
    corrupt: new Set(),
    ignoreRange: false,
    noSize: new Set(),
    trickle: new Map(),
    trickleHead: new Map(),
  };

  /** Writes `body` a few bytes at a time (behaviour.trickle). */
  const trickleBody = (res: http.ServerResponse, body: Buffer, t: { bytes: number; everyMs: number }) => {
    let pos = 0;
    const timer = setInterval(() => {
      if (pos >= body.length) {
        clearInterval(timer);
        res.end();
        return;
      }
      res.write(body.subarray(pos, pos + t.bytes));
      pos += t.bytes;
    }, t.everyMs);
    res.on('close', () => clearInterval(timer));
  };

  const serveBody = (req: http.IncomingMessage, res: http.ServerResponse, name: string, blob: Blob, extra: Record<string, string>) => {
    const data = behaviour.corrupt.has(name) ? flipped(blob.data) : blob.data;
    let start = 0;
    let status = 200;
    const headers: Record<string, string> = { ...extra, 'accept-ranges': 'bytes' };
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m && !behaviour.ignoreRange) {
      start = Number(m[1]);
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
    }
    const body = data.subarray(start);
    if (behaviour.noSize.has(name)) {
      for (const h of ['etag', 'x-linked-size', 'x-linked-etag']) delete headers[h];
    } else {
      headers['content-length'] = String(body.length);
    }
    res.writeHead(status, headers);
    const slow = behaviour.trickle.get(name);
    if (slow) {
      trickleBody(res, body, slow);
      return;
    }
    const drop = behaviour.dropAfter.get(name);
    if (drop && drop.times > 0) {
      drop.times--;
      res.write(body.subarray(0, drop.bytes), () => res.socket?.destroy());
      return;
    }
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push({ method: req.method ?? '', url: url.pathname + url.search, range: req.headers.range });
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);

    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'revision' && parts.length === 6) {
      const files = repos.get(`${parts[2]}/${parts[3]}`);
      if (!behaviour.api || !files || parts[5] !== 'main') {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
        return;
      }
      const siblings = [...files].filter(([rfilename]) => !behaviour.noSize.has(rfilename)).map(([rfilename, b]) => ({
        rfilename,
        size: b.data.length,
        blobId: b.lfs ? 'f'.repeat(40) : b.gitSha1,
        ...(b.lfs ? { lfs: { sha256: b.sha256, size: b.data.length, pointerSize: 134 } } : {}),
      }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: `${parts[2]}/${parts[3]}`, sha: COMMIT, siblings }));
      return;
    }
    if (parts[0] === 'cdn' && parts.length === 2) {
      const hit = byHash.get(parts[1] ?? '');
      if (!hit) {
        res.writeHead(404).end();
        return;
      }
      serveBody(req, res, hit.name, hit.blob, { 'content-type': 'application/octet-stream' });
      return;
    }
    if (parts[2] === 'resolve' && parts.length === 5) {
      const files = repos.get(`${parts[0]}/${parts[1]}`);
      if (!files) {
        res.writeHead(401, { 'x-error-code': 'RepoNotFound', 'x-error-message': 'Repository not found' }).end();
        return;
      }
      const name = parts[4] ?? '';
      const blob = parts[3] === 'main' ? files.get(name) : undefined;
      if (!blob) {
        res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'x-error-message': 'Entry not found' }).end();
        return;
      }
      const head = behaviour.trickleHead.get(name);
      if (head) {
        // Take the socket over and trickle a response head that never completes.
        const socket = res.socket;
        const text = Buffer.from('HTTP/1.1 200 OK\r\n' + 'x-slow: ' + 'a'.repeat(100_000) + '\r\n\r\n');
        let pos = 0;
        const timer = setInterval(() => {
          if (!socket || socket.destroyed || pos >= text.length) {
            clearInterval(timer);
            return;
          }
          socket.write(text.subarray(pos, pos + 1));
          pos++;
        }, head.everyMs);
        socket?.on('close', () => clearInterval(timer));
        return;
      }
      if (blob.lfs && !behaviour.noSize.has(name)) {
        res
          .writeHead(302, {
            location: `/cdn/${blob.sha256}?expires=1`,
            'x-linked-size': String(blob.data.length),
            'x-linked-etag': `"${blob.sha256}"`,
            etag: `"${blob.sha256}"`,
            'x-repo-commit': COMMIT,
            'content-length': '0',
          })
          .end();
        return;
      }
      serveBody(req, res, name, blob, { etag: `"${blob.lfs ? blob.sha256 : blob.gitSha1}"`, 'x-repo-commit': COMMIT });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    behaviour,
    addRepo(id, files) {
      const m = new Map<string, Blob>();
      for (const [name, data] of Object.entries(files)) {
        const blob = makeBlob(name, data);
        m.set(name, blob);
        if (blob.lfs) byHash.set(blob.sha256, { name, blob });
      }
      repos.set(id, m);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
