// GET /metrics: Prometheus text exposition (requests, audio seconds, RTF, queue depth, tokens/s, errors by code).
import type { HttpRoute } from '../context.js';

export const metricsRoute: HttpRoute = {
  name: 'metrics',
  methods: ['GET'],
  path: '/metrics',
  auth: true,
  whileDraining: true,
  async handle(_req, res, ctx) {
    const { contentType, body } = await ctx.metrics.render();
    res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  },
};
