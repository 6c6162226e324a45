/**
 * A counting semaphore. Downloads share one (`downloadLimiter`) so that a
 * graph with hundreds of sources does not open hundreds of connections to
 * the same few hosts; the scheduler's `--jobs` limits builds, not fetches.
 */

export const DEFAULT_MAX_DOWNLOADS = 4;

export class Limiter {
  private max: number;
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(limit: number) {
    this.max = Limiter.check(limit);
  }

  private static check(limit: number): number {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limiter size must be an integer >= 1, got ${limit}`);
    return limit;
  }

  get limit(): number {
    return this.max;
  }
  /** Slots in use now. */
  get active(): number {
    return this.running;
  }
  /** Callers waiting for a slot. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Changes the size; raising it wakes waiters at once, lowering it lets running holders finish. */
  setLimit(limit: number): void {
    this.max = Limiter.check(limit);
    this.pump();
  }

  /** Waits for a slot; the returned function releases it (idempotent). */
  acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener("abort", onAbort);
        this.running++;
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.running--;
          this.pump();
        });
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(grant);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.queue.push(grant);
      this.pump();
    });
  }

  /** Runs `fn` holding a slot. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private pump(): void {
    while (this.running < this.max && this.queue.length > 0) this.queue.shift()!();
  }
}

/** The limiter `download()` uses unless given another. */
export const downloadLimiter = new Limiter(DEFAULT_MAX_DOWNLOADS);
