/** Shared set-up for the unit tests: a cluster engine driven by the real decisions, and the events it recorded. */
import { ClusterEngine, type ClusterEvent, type EngineClock, type ClusterState } from '@underlay/core';

/** A decision as ClusterEngine.execute takes it. */
export type Decision<R> = (s: ClusterState) => { events: any[]; result: R };

/**
 * An engine (on `clock`, or the system clock), the log of every event it committed, and `run`, which
 * executes a decision as `actor` (default node:a), appends its events to the log and returns its result.
 */
export function engineWithLog(clock?: EngineClock) {
  const engine = new ClusterEngine(undefined, clock);
  const log: ClusterEvent[] = [];
  const run = <R>(d: Decision<R>, actor = 'node:a') => {
    const out = engine.execute(d, { actor });
    log.push(...out.events);
    return out.result;
  };
  return { engine, log, run };
}

/**
 * engineWithLog on a clock the test moves: it starts at `startMs` and only `advance` moves it; event
 * ids are id-1, id-2, …
 */
export function engineWithClock(startMs = Date.parse('2026-01-01T00:00:00Z')) {
  let now = startMs;
  let id = 0;
  const clock: EngineClock = { now: () => new Date(now), newId: () => `id-${++id}` };
  return { ...engineWithLog(clock), advance: (ms: number) => (now += ms), nowMs: () => now };
}
