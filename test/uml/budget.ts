/**
 * Time budgets of the user-mode-linux suites, host side (the guest side is `guestBudgets` in
 * guest-common.js; both read test/uml/budgets.json).
 *
 * A budget is never a guess: it is a duration measured on the reference machine (budgets.json, with
 * how it was measured) times a margin, times how much slower this machine is:
 *
 *   budget = max(floorMs, measured × margin) × factor × UML_BUDGET_SCALE
 *
 * The factor comes from a calibration that takes a second: how long `node -e 0` takes (median of 3),
 * against the same figure on the reference machine. The guest measures it inside UML at the start of
 * its script (every guest syscall and page fault is a ptrace round trip, so this is the slowdown that
 * matters for the steps); the host measures it on the host for the phases before the guest script
 * runs (boot, modules). A faster machine keeps the reference budgets (factor at least 1); a guest
 * more than `maxFactor` times slower is refused at once, saying so, instead of timing out later.
 *
 * Every step has its own budget and a timeout names the step: "guest step 'docker run' took longer
 * than 40 s". The guest stops its own slow steps; the host (runInUml) watches the same budgets
 * through $UML_DIR/progress.json and stops the guest when a step, or the whole script, overruns
 * them. jest's own timeout (`jestTimeoutMs`) is only a last resort: every phase at `maxFactor`.
 *
 * UML_BUDGET_SCALE (default 1) multiplies every budget: a debugging knob (e.g. 0.05 shows what a
 * timeout looks like); it is passed into the guest.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { measureNodeStart } from '../lab/budget';

/** Phases of a UML run the host times before and after the guest script (keys of budgets.json `host`). */
export type HostPhase = 'boot' | 'module loading and mounts' | 'guest script start' | 'between guest steps' | 'shutdown';

export interface BudgetTable {
  measuredOn: string;
  margin: number;
  floorMs: number;
  maxFactor: number;
  calibration: { hostNodeStartMs: number; guestNodeStartMs: number };
  host: Record<HostPhase, number>;
  suites: Record<string, { scriptMs: number; steps: Record<string, number> }>;
}

export const BUDGETS_FILE = path.join(__dirname, 'budgets.json');
export const BUDGETS: BudgetTable = JSON.parse(fs.readFileSync(BUDGETS_FILE, 'utf8')) as BudgetTable;

/** UML_BUDGET_SCALE: multiplies every budget (default 1). */
export function budgetScale(): number {
  const v = Number(process.env.UML_BUDGET_SCALE ?? 1);
  if (!(v > 0)) throw new Error(`UML_BUDGET_SCALE=${process.env.UML_BUDGET_SCALE}: must be a number above 0`);
  return v;
}

/** max(floor, measured × margin) × factor × scale, in whole ms. */
export function scaled(measuredMs: number, factor: number): number {
  return Math.ceil(Math.max(BUDGETS.floorMs, measuredMs * BUDGETS.margin) * factor * budgetScale());
}

export interface Calibration {
  /** Median of three `node -e 0` runs, ms. */
  nodeStartMs: number;
  runsMs: number[];
  /** nodeStartMs / the reference machine's (not clamped). */
  ratio: number;
  /** The factor budgets are multiplied by: the ratio, at least 1. */
  factor: number;
}

let hostCal: Calibration | undefined;

/** The host's calibration (measured once per process; its factor is capped at maxFactor). */
export function hostCalibration(): Calibration {
  if (hostCal) return hostCal;
  const { nodeStartMs, runsMs } = measureNodeStart();
  const ratio = Math.round((nodeStartMs / BUDGETS.calibration.hostNodeStartMs) * 100) / 100;
  // The host's phases are short (boot, modules, shutdown): past maxFactor, its factor is capped rather than refused.
  hostCal = { nodeStartMs, runsMs, ratio, factor: Math.min(BUDGETS.maxFactor, Math.max(1, ratio)) };
  return hostCal;
}

/** The host's budget for a phase of the run. */
export function hostPhaseBudgetMs(phase: HostPhase): number {
  return scaled(BUDGETS.host[phase], hostCalibration().factor);
}

/** How a budget was made, for messages: "measured 9.9 s × margin 4 × factor 1.3". */
export function explainBudget(measuredMs: number, factor: number): string {
  const scale = budgetScale();
  const base = measuredMs * BUDGETS.margin < BUDGETS.floorMs ? `floor ${BUDGETS.floorMs / 1000} s` : `measured ${measuredMs / 1000} s × margin ${BUDGETS.margin}`;
  return `${base} × machine factor ${factor}${scale !== 1 ? ` × UML_BUDGET_SCALE ${scale}` : ''}`;
}

/** A suite's measurements; throws naming the file when the suite is not there. */
export function suiteBudgets(suite: string): BudgetTable['suites'][string] {
  const s = BUDGETS.suites[suite];
  if (!s) throw new Error(`no measured durations for suite ${suite} in ${BUDGETS_FILE}`);
  return s;
}

/**
 * jest's timeout for a suite's UML run: every host phase and the whole guest script at the largest factor
 * the budgets accept, plus a minute. Only a last resort: the step budgets end a slow run long before.
 */
export function jestTimeoutMs(suite: string): number {
  const s = suiteBudgets(suite);
  const f = BUDGETS.maxFactor;
  const phases = (['boot', 'module loading and mounts', 'guest script start', 'shutdown'] as const).reduce((n, p) => n + scaled(BUDGETS.host[p], f), 0);
  return phases + scaled(s.scriptMs, f) + 60_000;
}

/** One guest step as guest-common.js records it, with its budget. */
export interface BudgetedStep {
  name: string;
  code: number | string;
  ms?: number;
  budget?: string;
  budgetMs?: number;
  error?: string;
}

/** The steps that overran their budget (the guest stopped them), as "guest step 'X' took longer than N s" lines. */
export function overrunSteps(steps: readonly BudgetedStep[]): string[] {
  return steps.filter((s) => s.code === 'timeout').map((s) => s.error ?? `guest step '${s.name}' took longer than ${(s.budgetMs ?? 0) / 1000} s`);
}

/** One line per step with its duration and budget, for the test output. */
export function durationTable(steps: readonly BudgetedStep[]): string {
  return steps
    .filter((s) => s.ms !== undefined)
    .map((s) => `  ${String(s.ms).padStart(7)} ms  of ${s.budgetMs !== undefined ? `${String(Math.round(s.budgetMs / 1000)).padStart(4)} s` : '     -'}  ${s.name}${s.budget && s.budget !== s.name ? ` [${s.budget}]` : ''}`)
    .join('\n');
}
