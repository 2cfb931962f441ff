/**
 * Time budgets of the lab's slow steps (dockerd start, lab teardown, the docker CLI's safety limit),
 * made as the user-mode-linux suites make theirs (test/uml/budget.ts): a duration measured on the
 * reference machine (test/lab/budgets.json) times a margin, times how much slower this machine is:
 *
 *   budget = max(floorMs, measured × margin) × factor
 *
 * (floorMs per step: the fixed limit the step had before, 60 s for dockerd start and 120 s for the
 * docker CLI and the teardown; the measured times are far below, so the floors hold here and a slower
 * machine gets them multiplied. The docker CLI's limit applies to any docker command, some of which
 * wait on the product's own deadlines.)
 *
 * factor = this machine's `node -e 0` time (median of 3, measured once per process) over the reference
 * machine's, at least 1 and at most maxFactor. A budget that runs out names its step ("lab step
 * 'dockerd start' on h1 took longer than N s (…)"). The lab records the longest time of each step in
 * this process (`recordLabStep`) and prints them when it is destroyed: the figures budgets.json holds.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Steps with a budget (keys of budgets.json `steps`). */
export type LabStep = 'dockerd start' | 'docker cli' | 'lab teardown' | 'image build' | 'image load' | 'plugin start' | 'container restart';

interface LabBudgetTable {
  measuredOn: string;
  margin: number;
  maxFactor: number;
  calibration: { hostNodeStartMs: number };
  /** Per step: the longest duration measured (ms) and the floor of its budget (ms). */
  steps: Record<LabStep, { measuredMs: number; floorMs: number }>;
}

const TABLE = JSON.parse(fs.readFileSync(path.join(__dirname, 'budgets.json'), 'utf8')) as LabBudgetTable;

export interface NodeStartCalibration {
  /** Median of three `node -e 0` runs, ms. */
  nodeStartMs: number;
  runsMs: number[];
}

/** How long `node -e 0` takes here: median of three runs (a fraction of a second). */
export function measureNodeStart(): NodeStartCalibration {
  const runsMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    execFileSync(process.execPath, ['-e', '0'], { stdio: 'ignore', timeout: 60_000 });
    runsMs.push(Math.round(performance.now() - t0));
  }
  return { nodeStartMs: [...runsMs].sort((a, b) => a - b)[1]!, runsMs };
}

let factor: number | undefined;

/** This machine's factor for the lab's budgets (measured once per process). */
export function labFactor(): number {
  if (factor === undefined) {
    const ratio = measureNodeStart().nodeStartMs / TABLE.calibration.hostNodeStartMs;
    factor = Math.min(TABLE.maxFactor, Math.max(1, Math.round(ratio * 100) / 100));
  }
  return factor;
}

/** The budget of a lab step, ms. */
export function labBudgetMs(step: LabStep): number {
  const { measuredMs, floorMs } = TABLE.steps[step];
  return Math.ceil(Math.max(floorMs, measuredMs * TABLE.margin) * labFactor());
}

/** "lab step 'dockerd start' on h1 took longer than 40 s (measured 2.5 s × margin 4 × machine factor 1)". */
export function labOverrun(step: LabStep, where = ''): string {
  const { measuredMs, floorMs } = TABLE.steps[step];
  const base = measuredMs * TABLE.margin < floorMs ? `floor ${floorMs / 1000} s` : `measured ${measuredMs / 1000} s × margin ${TABLE.margin}`;
  return `lab step '${step}'${where ? ` ${where}` : ''} took longer than ${labBudgetMs(step) / 1000} s (${base} × machine factor ${labFactor()}; test/lab/budgets.json)`;
}

const longest: Partial<Record<LabStep, number>> = {};

/** Notes how long a step took (the longest per step is kept for `labStepReport`). */
export function recordLabStep(step: LabStep, ms: number): void {
  longest[step] = Math.max(longest[step] ?? 0, Math.round(ms));
}

/** The longest time per step in this process, with the budgets, for the test output; undefined if none ran. */
export function labStepReport(): string | undefined {
  const steps = Object.entries(longest) as Array<[LabStep, number]>;
  if (!steps.length) return undefined;
  return `lab step durations (longest, ms, of budget; machine factor ${labFactor()}): ${steps.map(([s, ms]) => `${s} ${ms} of ${labBudgetMs(s)}`).join(', ')}`;
}
