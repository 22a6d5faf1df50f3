// Constants of the queue that the CLI needs without loading the queue modules (ioredis, BullMQ).

/** The queue name used when none is given. */
export const DEFAULT_QUEUE = 'rustasr';
