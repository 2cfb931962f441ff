/**
 * The one reconcile loop of the code base (the model is controller-runtime's workqueue + Reconciler): a reconciler
 * is one level-triggered function — read the desired state, read what is there, make them equal, safe to repeat —
 * and this runner owns everything around it:
 *   - triggers are coalesced: any number of trigger() calls while a pass runs cause exactly one more pass after it;
 *   - one pass at a time, never overlapping;
 *   - a periodic resync (resyncMs) runs a pass even when nothing triggered, to repair drift nobody reported;
 *   - a failed pass (it threw) is retried after an exponential backoff with jitter (libs/core/src/backoff.ts); the
 *     backoff resets after a pass that succeeds; a trigger during the wait runs the pass at once (new information
 *     may be what fixes it) without resetting the backoff;
 *   - a pass may ask to run again later ({ requeueAfterMs }) — for example when one item is backing off;
 *   - stop() cancels the timers, aborts the pass's signal and waits for the running pass to end.
 * Nothing escapes: a failure goes to onError, never to an unhandled rejection.
 */
import { Backoff, type BackoffPolicy } from '@underlay/core';

export type PassReason = 'start' | 'trigger' | 'resync' | 'retry' | 'requeue';

export interface Pass {
  /** Why this pass runs (every reason gathered since the last pass started). */
  readonly reasons: ReadonlySet<PassReason>;
  /** Aborted when the runner stops: a long pass should give up at its next step. */
  readonly signal: AbortSignal;
  /** Failed passes in a row before this one (0 after a success). */
  readonly failures: number;
}

export interface PassResult {
  /** Run another pass after this many ms (the earliest request wins; a trigger before then runs it sooner). */
  requeueAfterMs?: number;
}

export interface ReconcileRunnerOptions {
  /** Names the loop in log lines and errors. */
  name: string;
  reconcile: (pass: Pass) => Promise<PassResult | void>;
  /** A pass at least this often (ms); none when undefined. */
  resyncMs?: number;
  /** Delays between failed passes (default 100 ms … 30 s). */
  backoff?: BackoffPolicy;
  /** A pass failed; `retryInMs` is when the next one runs. */
  onError?: (err: unknown, info: { name: string; failures: number; retryInMs: number }) => void;
  /** A pass succeeded after `failures` failed ones. */
  onRecovered?: (info: { name: string; failures: number }) => void;
  /** Told of every pass when it ends: the loop's name and whether it succeeded (metrics). */
  observe?: (name: string, ok: boolean) => void;
  random?: () => number;
}

export interface RunnerStats {
  passes: number;
  /** Failed passes, all time. */
  errors: number;
  /** Failed passes in a row (0 after a success). */
  failures: number;
  running: boolean;
}

export const DEFAULT_RECONCILE_BACKOFF: BackoffPolicy = { minMs: 100, maxMs: 30_000 };

export class ReconcileRunner {
  private readonly backoff: Backoff;
  private readonly reasons = new Set<PassReason>();
  private running?: Promise<void>;
  private started = false;
  private stopped = false;
  private resyncTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private requeueTimer?: NodeJS.Timeout;
  private requeueAt = Infinity;
  private readonly abort = new AbortController();
  private idleWaiters: Array<() => void> = [];
  private readonly counts = { passes: 0, errors: 0 };

  constructor(private readonly opts: ReconcileRunnerOptions) {
    this.backoff = new Backoff(opts.backoff ?? DEFAULT_RECONCILE_BACKOFF, opts.random);
  }

  get name(): string {
    return this.opts.name;
  }

  /** Runs the first pass now and starts the resync timer. Triggers before start() are kept for the first pass. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    if (this.opts.resyncMs !== undefined && this.opts.resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.trigger('resync'), this.opts.resyncMs);
      this.resyncTimer.unref();
    }
    this.trigger('start');
  }

  /** Asks for a pass: now, or right after the one in flight. Repeated calls collapse into one pass. */
  trigger(reason: PassReason = 'trigger'): void {
    if (this.stopped) return;
    this.reasons.add(reason);
    if (!this.started || this.running) return;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
      // A trigger that came while the loop was finishing (after its last check) still gets its pass.
      if (this.reasons.size > 0 && !this.retryTimer && !this.stopped) this.trigger(this.reasons.values().next().value);
      else this.notifyIdle();
    });
  }

  private observe(ok: boolean): void {
    try {
      this.opts.observe?.(this.opts.name, ok);
    } catch {
      // Metrics must not stop the loop.
    }
  }

  private async loop(): Promise<void> {
    while (this.reasons.size > 0 && !this.stopped) {
      const reasons = new Set(this.reasons);
      this.reasons.clear();
      const failures = this.backoff.attempts;
      this.counts.passes++;
      try {
        const result = await this.opts.reconcile({ reasons, signal: this.abort.signal, failures });
        if (this.stopped) return;
        this.observe(true);
        if (failures > 0) this.opts.onRecovered?.({ name: this.opts.name, failures });
        this.backoff.reset();
        if (result?.requeueAfterMs !== undefined) this.requeue(result.requeueAfterMs);
      } catch (err) {
        if (this.stopped) return;
        this.counts.errors++;
        this.observe(false);
        const delay = this.backoff.next();
        try {
          this.opts.onError?.(err, { name: this.opts.name, failures: this.backoff.attempts, retryInMs: delay });
        } catch {
          // A logger that throws must not stop the loop.
        }
        // Triggers that came in during the failed pass wait for the retry; a trigger after this runs the pass sooner.
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.trigger('retry');
        }, delay);
        this.retryTimer.unref();
        return;
      }
    }
  }

  private requeue(ms: number): void {
    const at = Date.now() + Math.max(0, ms);
    if (this.requeueTimer && at >= this.requeueAt) return;
    if (this.requeueTimer) clearTimeout(this.requeueTimer);
    this.requeueAt = at;
    this.requeueTimer = setTimeout(() => {
      this.requeueTimer = undefined;
      this.requeueAt = Infinity;
      this.trigger('requeue');
    }, Math.max(0, ms));
    this.requeueTimer.unref();
  }

  /** Resolves when no pass is running or due now (a pending retry or requeue timer does not count). */
  idle(): Promise<void> {
    if (!this.running && (this.reasons.size === 0 || this.stopped || !this.started || this.retryTimer)) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private notifyIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const r of w) r();
  }

  stats(): RunnerStats {
    return { ...this.counts, failures: this.backoff.attempts, running: this.running !== undefined };
  }

  /** Stops the timers, aborts the running pass's signal and waits for it to end. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.resyncTimer, this.retryTimer, this.requeueTimer]) if (t) clearTimeout(t);
    this.resyncTimer = this.retryTimer = this.requeueTimer = undefined;
    this.abort.abort();
    await this.running?.catch(() => undefined);
    this.notifyIdle();
  }
}
