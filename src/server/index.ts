// rustasr/server: the OpenAI-compatible transcription server (`rustasr serve`) as an API.
export { RustAsrServer, createServer, serve } from './server.js';
export type { ServeOptions } from './server.js';
export type { HttpRoute, ServerContext, UpgradeRoute } from './context.js';
export { HttpError, refuseUpgrade } from './errors.js';
export type { OpenAiErrorBody, OpenAiErrorType } from './errors.js';
export { Gate } from './gate.js';
export type { Ticket } from './gate.js';
export { RESPONSE_FORMATS } from './formats.js';
export type { ResponseFormat, VerboseJson, VerboseSegment, WordTiming } from './formats.js';
