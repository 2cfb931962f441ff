/**
 * The etcd client's fault handling, in place of etcd3's defaults, for an etcd cluster that loses a member.
 *
 * etcd3 runs each unary call through a global policy (by default: up to 3 tries on any "recoverable" failure) and,
 * on the member it picked, a per-member policy (by default: a circuit breaker that skips the member for 5 s after 3
 * failures in a row). Two things go wrong with those defaults when a member dies:
 *
 * - Every call carries one absolute deadline, shared by its tries. A try that ran into that deadline was retried on
 *   the next members, where it failed at once (the deadline had passed) and counted as their failure too: one slow
 *   call could open the breakers of healthy members, and a few made the whole client refuse every call for 5 s
 *   ("not reachable") while etcd itself was fine again.
 * - While etcd elects a new raft leader (1–2 s), calls to the live members wait too: enough of them open those
 *   members' breakers, which then stay open 5 s after etcd has recovered.
 *
 * Here a call whose deadline passed is not tried again (no try could finish in time), and a member's breaker opens
 * for MEMBER_SKIP_MS (1 s) after 3 failures in a row; then one call may try it, and its outcome closes or reopens it.
 * A member that hangs (stopped, partitioned) costs one call per second its deadline, not a third of all calls.
 */
import type { IOptions } from 'etcd3';
import { etcd3 } from './lib.js';
import { UnavailableError } from '@underlay/core';

/** Tries of one call, each on another member when the last one failed (etcd3's default). */
export const CALL_TRIES = 3;
/** Failures in a row that make a member skipped. */
export const MEMBER_FAILURES = 3;
/** How long a member is skipped before one call may try it again. */
export const MEMBER_SKIP_MS = 1_000;

type FaultHandling = NonNullable<IOptions['faultHandling']>;

/** A member skipped by its breaker; etcd3 (through cockatiel's `isBrokenCircuitError`) then tries the next member. */
export class MemberSkippedError extends UnavailableError {
  readonly isBrokenCircuitError = true;
  constructor(readonly member: string) {
    super(`etcd member ${member} skipped: its last ${MEMBER_FAILURES} calls failed or timed out; one call tries it again within ${MEMBER_SKIP_MS} ms`);
    this.name = 'MemberSkippedError';
  }
}

/** Whether a failure says the call may succeed on another try: recoverable for etcd3, and not out of time. */
export function worthAnotherTry(e: unknown): boolean {
  return e instanceof Error && etcd3().isRecoverableError(e) && !(e instanceof etcd3().GRPCDeadlineExceededError);
}

/** The global policy: up to CALL_TRIES tries while the failure is worth another try. */
export class CallTries {
  constructor(private readonly tries = CALL_TRIES) {}
  async execute<T>(fn: (context: { attempt: number }) => PromiseLike<T> | T): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn({ attempt });
      } catch (e) {
        if (attempt >= this.tries || !worthAnotherTry(e)) throw e;
      }
    }
  }
}

/** One member's breaker: skipped for skipMs after `failures` recoverable failures in a row, then one trial call. */
export class MemberBreaker {
  private inARow = 0;
  private openUntil = 0;
  private trialRunning = false;

  constructor(
    readonly member: string,
    private readonly failures = MEMBER_FAILURES,
    private readonly skipMs = MEMBER_SKIP_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether calls skip this member now. */
  get open(): boolean {
    return this.inARow >= this.failures && (this.now() < this.openUntil || this.trialRunning);
  }

  async execute<T>(fn: (context: { attempt: number }) => PromiseLike<T> | T): Promise<T> {
    const tripped = this.inARow >= this.failures;
    if (tripped && (this.now() < this.openUntil || this.trialRunning)) throw new MemberSkippedError(this.member);
    if (tripped) this.trialRunning = true;
    try {
      const v = await fn({ attempt: 1 });
      this.inARow = 0;
      return v;
    } catch (e) {
      if (e instanceof Error && etcd3().isRecoverableError(e)) {
        this.inARow++;
        if (this.inARow >= this.failures) this.openUntil = this.now() + this.skipMs;
      } else {
        this.inARow = 0; // etcd answered (a refusal): the member works
      }
      throw e;
    } finally {
      if (tripped) this.trialRunning = false;
    }
  }
}

/** etcd3's `faultHandling` option with these policies. */
export function faultHandling(): Pick<FaultHandling, 'global' | 'host'> {
  return {
    global: new CallTries() as unknown as FaultHandling['global'],
    host: (member: string) => new MemberBreaker(member) as unknown as ReturnType<NonNullable<FaultHandling['host']>>,
  };
}
