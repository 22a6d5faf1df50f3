// GET /healthz (the process answers) and GET /readyz (a model is loaded and the server is not draining).
// Both are served without the API key, for load balancers and orchestrators.
import type { ServerResponse } from 'node:http';

import type { HttpRoute } from '../context.js';

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export const healthRoute: HttpRoute = {
  name: 'healthz',
  methods: ['GET', 'HEAD'],
  path: '/healthz',
  auth: false,
  whileDraining: true,
  handle(_req, res) {
    json(res, 200, { status: 'ok' });
  },
};

export const readyRoute: HttpRoute = {
  name: 'readyz',
  methods: ['GET', 'HEAD'],
  path: '/readyz',
  auth: false,
  whileDraining: true,
  handle(_req, res, ctx) {
    if (ctx.draining) json(res, 503, { status: 'draining' });
    else if (ctx.modelError !== undefined) json(res, 503, { status: 'failed', error: ctx.modelError.message });
    else if (ctx.model === undefined) json(res, 503, { status: 'loading' });
    else json(res, 200, { status: 'ready', model: ctx.modelId });
  },
};
