// Bounded waiting: `waitFor` polls a condition until a deadline and, when it
// times out, says which step was slow (and shows the log of the process it was
// waiting on); `settlesWithin` races a promise against a timer. Plain retries
// of one operation use `retry`/`sleep` from @underlay/adapters instead.
import { setTimeout as delay } from 'node:timers/promises';

/** What waitFor needs of a process it watches (a Proc from spawn.ts). */
export interface WatchedProcess {
  readonly name: string;
  exitInfo(): unknown;
  describe(lines?: number): string;
}

export interface WaitOptions {
  timeoutMs: number;
  /** Human description used in the timeout error: "Timed out after 5000 ms waiting for <what>". */
  what: string;
  intervalMs?: number;
  /** Fail fast (with its log tail) if this process exits while we wait. */
  proc?: WatchedProcess;
}

/**
 * Polls `predicate` until it returns a truthy value (which is returned) or the
 * timeout passes. Exceptions from the predicate count as "not yet"; the last
 * one is included in the timeout error.
 *
 * The pause between polls is node:timers/promises' setTimeout, not the runtime's
 * `sleep`, on purpose: that one unrefs its timer, and a plain-node script
 * (bench/) that waits here for a killed process to go away, with nothing else
 * keeping the event loop alive, would simply exit half-way through its cleanup.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  opts: WaitOptions,
): Promise<NonNullable<T>> {
  const interval = opts.intervalMs ?? 100;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (opts.proc && opts.proc.exitInfo() !== undefined) {
      throw new Error(`${opts.proc.name} exited while waiting for ${opts.what}\n${opts.proc.describe()}`);
    }
    if (Date.now() >= deadline) {
      let msg = `Timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`;
      if (lastError !== undefined) msg += `; last error: ${(lastError as Error)?.message ?? String(lastError)}`;
      if (opts.proc) msg += `\n${opts.proc.describe()}`;
      throw new Error(msg);
    }
    await delay(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
}

/** True if `p` settles within ms; the timer is cleared either way (no dangling handle keeping jest alive). */
export function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    p.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}
