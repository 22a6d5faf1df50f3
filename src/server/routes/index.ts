// The route table. One module per route; the server dispatches on these lists and nothing else.
import type { HttpRoute, UpgradeRoute } from '../context.js';
import { healthRoute, readyRoute } from './health.js';
import { metricsRoute } from './metrics.js';
import { modelRoute, modelsRoute } from './models.js';
import { realtimeRoute } from './realtime.js';
import { transcriptionsRoute } from './transcriptions.js';

export const HTTP_ROUTES: readonly HttpRoute[] = [healthRoute, readyRoute, metricsRoute, modelsRoute, modelRoute, transcriptionsRoute];

/** WebSocket routes (HTTP Upgrade requests). An upgrade on any other path is answered 404. */
export const UPGRADE_ROUTES: readonly UpgradeRoute[] = [realtimeRoute];
