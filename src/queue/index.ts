// rustasr/queue: transcription jobs on a BullMQ queue (Redis broker): workers and submission.
export { DEFAULT_QUEUE, jobIdOf } from './jobs.js';
export type { TranscriptionJob, TranscriptionJobData, TranscriptionJobOptions, TranscriptionJobResult } from './jobs.js';
export { TranscriptionWorker, startWorker } from './worker.js';
export type { WorkerJobEvent, WorkerOptions } from './worker.js';
export { enqueueTranscriptions } from './enqueue.js';
export type { EnqueueOptions, JobOutcome } from './enqueue.js';
