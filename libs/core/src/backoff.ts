/**
 * The one backoff policy of the code base: exponential delays with jitter, bounded by a maximum. Pure: the random
 * source is injected so tests can pin it. Every retry in underlay (RPC calls, the event consumer, the leader's
 * campaign, every reconcile loop through the shared ReconcileRunner) takes its delays from here.
 */

export interface BackoffPolicy {
  /** Delay after the first failure, in ms. */
  readonly minMs: number;
  /** No delay is longer than this, in ms. */
  readonly maxMs: number;
  /** Growth per failure (default 2). */
  readonly factor?: number;
  /**
   * Fraction of each delay taken off at random (0 … 1, default 0.2), so that many hosts retrying the same
   * outage do not come back in lockstep. A delay is in [(1 − jitter)·d, d] where d = min(max, min·factor^n).
   */
  readonly jitter?: number;
}

/** Delay before retry number `attempt` (0 for the first retry). */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const min = Math.max(0, policy.minMs);
  const max = Math.max(min, policy.maxMs);
  const factor = policy.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, policy.jitter ?? 0.2));
  // Cap the exponent: factor^n overflows to Infinity long before anyone waits that many times.
  const base = Math.min(max, min * factor ** Math.min(Math.max(attempt, 0), 64));
  return Math.max(0, Math.round(base * (1 - jitter * random())));
}

/** The state of one retrying thing: how many failures in a row, and the delay before the next try. */
export class Backoff {
  private n = 0;
  constructor(
    readonly policy: BackoffPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  /** Failures since the last reset. */
  get attempts(): number {
    return this.n;
  }

  /** Records a failure and returns how long to wait before the next try. */
  next(): number {
    return backoffDelay(this.policy, this.n++, this.random);
  }

  /** The delay next() would return, without recording a failure (largest value, no jitter taken off). */
  peek(): number {
    return backoffDelay(this.policy, this.n, () => 0);
  }

  /** A success: the next failure starts again at minMs. */
  reset(): void {
    this.n = 0;
  }
}
