/**
 * Logging a condition that lasts: a loop that fails on every pass (Docker not running, etcd stopped) logs when the
 * failure starts, when its text changes, a reminder after 10, 100, 1000 … failed passes, and when it works again
 * with the count — never the same line every few seconds for as long as the condition lasts. Failures are
 * warnings (logWarn: the logger's warn level when it has one); the recovery is an info line.
 */
import { logWarn } from '../telemetry/log.js';

export interface FailureLog {
  /** A failed pass; logs only a change of state, a new text, or a reminder at a power of ten. */
  failed(err: unknown): void;
  /** A pass that worked; logs the recovery once if the loop was failing. */
  recovered(): void;
  /** Failed passes since the last success. */
  readonly failures: number;
}

const textOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** `what` names the loop in each line, e.g. "cluster network reconcile". */
export function failureLog(log: (line: string) => void, what: string): FailureLog {
  let failures = 0;
  let last = '';
  let nextReminder = 10;
  return {
    failed(err) {
      failures++;
      const text = textOf(err);
      if (failures === 1) logWarn(log, `${what} failed: ${text} (retrying; logged again when it changes)`);
      else if (text !== last) logWarn(log, `${what} failed: ${text} (${failures} failed passes)`);
      else if (failures === nextReminder) logWarn(log, `${what} still failing after ${failures} passes: ${text}`);
      if (failures >= nextReminder) nextReminder *= 10;
      last = text;
    },
    recovered() {
      if (failures > 0) log(`${what} works again after ${failures} failed ${failures === 1 ? 'pass' : 'passes'} (last: ${last})`);
      failures = 0;
      last = '';
      nextReminder = 10;
    },
    get failures() {
      return failures;
    },
  };
}
