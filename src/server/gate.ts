// Admission control: at most `maxConcurrent` sessions run at once; up to `maxQueue` more wait (uploading, or
// uploaded and waiting for a slot) in arrival order; beyond that, enter() refuses (HTTP 429).
import { abortError } from '../core/abort.js';

/** One admitted request: it holds a queue place until start(), then a run slot until release(). */
export interface Ticket {
  /** Waits for a run slot (FIFO). Rejects with ABORTED if `signal` fires first (the place is given back). */
  start(signal?: AbortSignal): Promise<void>;
  /** Gives back the queue place or run slot. Idempotent. */
  release(): void;
}

export class Gate {
  private runningCount = 0;
  private waitingCount = 0;
  private readonly slots: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly maxConcurrent: number,
    readonly maxQueue: number,
  ) {}

  /** Sessions running now. */
  get running(): number {
    return this.runningCount;
  }

  /** Admitted requests not yet running (the queue depth). */
  get waiting(): number {
    return this.waitingCount;
  }

  /** A ticket, or undefined when maxConcurrent + maxQueue requests are already admitted. */
  enter(): Ticket | undefined {
    if (this.runningCount + this.waitingCount >= this.maxConcurrent + this.maxQueue) return undefined;
    this.waitingCount++;
    let state: 'waiting' | 'running' | 'done' = 'waiting';
    let wake: (() => void) | undefined;
    const toRunning = () => {
      this.waitingCount--;
      this.runningCount++;
      state = 'running';
    };
    return {
      start: (signal) =>
        new Promise<void>((resolve, reject) => {
          if (state !== 'waiting') {
            reject(new Error('ticket already started or released'));
            return;
          }
          if (signal?.aborted) {
            reject(abortError(signal.reason));
            return;
          }
          if (this.runningCount < this.maxConcurrent && this.slots.length === 0) {
            toRunning();
            resolve();
            return;
          }
          const onAbort = () => {
            const i = wake === undefined ? -1 : this.slots.indexOf(wake);
            if (i >= 0) this.slots.splice(i, 1);
            reject(abortError(signal?.reason));
          };
          wake = () => {
            signal?.removeEventListener('abort', onAbort);
            toRunning();
            resolve();
          };
          this.slots.push(wake);
          signal?.addEventListener('abort', onAbort, { once: true });
        }),
      release: () => {
        if (state === 'done') return;
        if (state === 'running') this.runningCount--;
        else {
          this.waitingCount--;
          const i = wake === undefined ? -1 : this.slots.indexOf(wake);
          if (i >= 0) this.slots.splice(i, 1);
        }
        state = 'done';
        this.pump();
      },
    };
  }

  private pump(): void {
    while (this.runningCount < this.maxConcurrent && this.slots.length > 0) this.slots.shift()!();
    if (this.runningCount + this.waitingCount === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  /** Resolves when nothing is admitted (no session running or waiting). */
  idle(): Promise<void> {
    if (this.runningCount + this.waitingCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
