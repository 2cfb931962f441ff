/**
 * Waiting and retrying with the shared backoff policy (libs/core/src/backoff.ts). `retry` is the only retry loop
 * for one-shot operations (RPC calls, the leader's campaign, waiting for a service); level-triggered loops use
 * ReconcileRunner instead.
 */
import { Backoff, UnderlayError, type BackoffPolicy } from '@underlay/core';

/**
 * Resolves after `ms`, or at once (without throwing) when `signal` aborts. The timer does not hold the process open,
 * unless `keepAlive` (a command-line tool whose only pending work is this wait).
 */
export function sleep(ms: number, signal?: AbortSignal, opts: { keepAlive?: boolean } = {}): Promise<void> {
  if (signal?.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    if (!opts.keepAlive) t.unref?.();
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface RetryOptions {
  backoff: BackoffPolicy;
  /** Whether a failure may be retried (decide by error code, never by message text). Default: never. */
  retryIf?: (err: unknown, attempt: number) => boolean;
  /** Give up when the next wait would end after this time (ms since the epoch). */
  deadline?: number;
  /** Stop retrying when aborted (the last error is thrown). */
  signal?: AbortSignal;
  /** Called before each wait (for a log line). */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  random?: () => number;
  /** The waits hold the process open (see sleep). */
  keepAlive?: boolean;
}

/**
 * Thrown by `retry` when the deadline ends the retries: the last failure's code (unavailable when it had none) and
 * text with the number of tries; `cause` is the last failure. Retriable: a later call may succeed.
 */
export class RetryExhausted extends UnderlayError {
  constructor(
    readonly attempts: number,
    cause: unknown,
  ) {
    const code = cause instanceof UnderlayError ? cause.code : 'unavailable';
    const text = cause instanceof Error ? cause.message : String(cause);
    super(code, `${text} (gave up after ${attempts} attempts)`, { retriable: true, cause });
    this.name = 'RetryExhausted';
  }
}

/**
 * Runs `fn` until it succeeds, a failure is not retriable, the signal aborts, or the deadline would pass.
 * The first try runs at once; attempt numbers start at 1.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const backoff = new Backoff(opts.backoff, opts.random);
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (opts.signal?.aborted || !(opts.retryIf?.(err, attempt) ?? false)) throw err;
      const delay = backoff.next();
      if (opts.deadline !== undefined && Date.now() + delay > opts.deadline) throw new RetryExhausted(attempt, err);
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay, opts.signal, { keepAlive: opts.keepAlive });
      if (opts.signal?.aborted) throw err;
    }
  }
}
