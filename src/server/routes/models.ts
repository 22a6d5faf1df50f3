// GET /v1/models and GET /v1/models/{id}: the served model, in OpenAI's list / model shapes.
import type { ServerResponse } from 'node:http';

import type { HttpRoute, ServerContext } from '../context.js';
import { HttpError } from '../errors.js';

function modelObject(ctx: ServerContext) {
  return { id: ctx.modelId, object: 'model', created: ctx.modelCreated, owned_by: 'rustasr' };
}

function json(res: ServerResponse, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** True when `name` (a `model` field or path segment) names the served model. */
export function isServedModel(ctx: ServerContext, name: string): boolean {
  return name === ctx.modelId || ctx.modelAliases.includes(name);
}

export function modelNotFound(ctx: ServerContext, name: string): HttpError {
  return new HttpError(
    404,
    'model_not_found',
    `the model ${JSON.stringify(name)} is not served here; this server serves ${JSON.stringify(ctx.modelId)}`,
    'model',
  );
}

export const modelsRoute: HttpRoute = {
  name: 'models',
  methods: ['GET'],
  path: '/v1/models',
  auth: true,
  handle(_req, res, ctx) {
    json(res, { object: 'list', data: ctx.model === undefined ? [] : [modelObject(ctx)] });
  },
};

export const modelRoute: HttpRoute = {
  name: 'model',
  methods: ['GET'],
  path: /^\/v1\/models\/(.+)$/,
  auth: true,
  handle(_req, res, ctx, params) {
    const name = decodeURIComponent(params[0] ?? '');
    if (ctx.model === undefined || !isServedModel(ctx, name)) throw modelNotFound(ctx, name);
    json(res, modelObject(ctx));
  },
};
