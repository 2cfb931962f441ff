/**
 * Link kinds the host kernel lacks (ipvlan, 802.1q, dummy), tested for real in a user-mode-linux
 * guest (test/uml/uml.ts). One boot runs every scenario of test/uml/guest/scenarios.js against the
 * COMPILED product code (libs/adapters/dist netlink LinkOps, services/node-agent/dist driver/links.js,
 * libs/core/dist options.js; build with `npx tsc -b` first). Each scenario is asserted on its own.
 *
 * Needs root, Debian's user-mode-linux (/usr/bin/linux.uml and /usr/lib/uml/modules/<version>),
 * busybox, iproute2 and node on the host (the guest runs the host's files through hostfs). Without
 * them every test here FAILS with the reason; nothing is skipped. Nothing touches the host's network:
 * all links live in the guest kernel.
 *
 * Time budgets: each scenario, command and links-check call has one (measured × margin × this machine's
 * factor: test/uml/budget.ts); an overrun fails the run naming the scenario. The durations are printed.
 *
 * Run: npx jest --selectProjects e2e --runTestsByPath test/e2e/uml-links.test.ts
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { jestTimeoutMs } from '../uml/budget';
import { reportGuestRun, runGuestScript, tail, type GuestBudgetInfo, type GuestStep, type UmlResult } from '../uml/uml';

const SUITE = 'uml-links';

const REPO = path.resolve(__dirname, '../..');
/** The scenarios of test/uml/guest/scenarios.js and what each one shows. */
const CASES: Array<[name: string, what: string]> = [
  ['ipvlan-l2', 'two containers with ipvlan l2 slaves of one parent ping each other'],
  ['ipvlan-l3', 'ipvlan l3: containers in different subnets on one parent ping each other'],
  ['ipvlan-l3s', 'ipvlan l3s: containers in different subnets on one parent ping each other'],
  ['dummy-parents', 'isolated networks get dm-/di- dummy parents (up, removed after), containers on them ping'],
  ['vlan-parent', 'parent eth1.20 is created as vlan 20 and removed; existing links are used as is; missing base fails'],
  ['vlan-isolation', 'two hosts on a trunk: VLAN 20 reaches VLAN 20 across hosts, never VLAN 30'],
  ['reboot-restore', 'after a simulated reboot the agent re-creates its 802.1q and dummy parents and removes stale endpoint links'],
];
const SCENARIOS = CASES.map(([name]) => name);
/** Compiled files the guest loads, with the sources they come from. */
const BUILT = [
  ['libs/adapters/dist/netlink/link-ops.js', 'libs/adapters/src/netlink/link-ops.ts'],
  ['libs/adapters/dist/netlink/encode.js', 'libs/adapters/src/netlink/encode.ts'],
  ['libs/adapters/dist/netlink/decode.js', 'libs/adapters/src/netlink/decode.ts'],
  ['services/node-agent/dist/driver/links.js', 'services/node-agent/src/driver/links.ts'],
  ['libs/core/dist/options.js', 'libs/core/src/options.ts'],
  ['services/node-agent/dist/driver/restore.js', 'services/node-agent/src/driver/restore.ts'],
  ['services/node-agent/dist/driver/store.js', 'services/node-agent/src/driver/store.ts'],
] as const;

interface Check {
  ok: boolean;
  what: string;
  detail?: string;
}
interface ScenarioResult {
  pass: boolean;
  ms: number;
  checks: Check[];
  error?: string;
  notes: string[];
}
interface Results {
  uname: string;
  node: string;
  totalMs: number;
  scenarios: Record<string, ScenarioResult>;
  /** One per scenario, with its duration and budget. */
  steps: GuestStep[];
  budgets: GuestBudgetInfo;
  durations: Record<string, number>;
  error?: string;
}

jest.setTimeout(jestTimeoutMs(SUITE));

let run: UmlResult;
let results: Results;

beforeAll(async () => {
  const missing = BUILT.filter(([dist]) => !fs.existsSync(path.join(REPO, dist))).map(([dist]) => dist);
  if (missing.length) throw new Error(`compiled product code missing (${missing.join(', ')}): run \`npx tsc -b\` first`);
  const stale = BUILT.filter(([dist, src]) => fs.existsSync(path.join(REPO, src)) && fs.statSync(path.join(REPO, src)).mtimeMs > fs.statSync(path.join(REPO, dist)).mtimeMs + 1000);
  if (stale.length) console.warn(`uml-links: sources newer than their build, the guest tests the OLD code: ${stale.map(([, s]) => s).join(', ')} (run \`npx tsc -b\`)`);

  ({ run, result: results } = await runGuestScript<Results>([], { script: 'exec node test/uml/guest/scenarios.js "$UML_RESULT"\n', suite: SUITE }));
  const t = run.timings;
  console.log(
    `uml-links: kernel ${results.uname}, node ${results.node}, pinned to host cpu ${run.cpu ?? "none"}; boot ${t.bootMs} ms, setup ${t.setupMs} ms, scenarios ${t.scriptMs} ms, ` +
      `shutdown ${t.shutdownMs} ms, total ${t.totalMs} ms; ${SCENARIOS.map((s) => `${s} ${results.scenarios[s]?.ms ?? '?'} ms`).join(', ')}`,
  );
  reportGuestRun(SUITE, run, results); // prints every scenario's duration and budget; throws naming any that overran
}, jestTimeoutMs(SUITE));

function report(name: string, s: ScenarioResult | undefined): string {
  if (!s) return `scenario ${name} did not run (guest exit ${run.exitCode})\n--- guest output ---\n${tail(run.guestLog)}`;
  const lines = s.checks.map((c) => `${c.ok ? '  ok  ' : '  FAIL'} ${c.what}${c.detail ? `\n         ${c.detail.replace(/\n/g, '\n         ')}` : ''}`);
  if (s.error) lines.push(`  error: ${s.error}`);
  if (s.checks.length === 0 && !s.error) lines.push('  (no checks ran)');
  for (const n of s.notes) lines.push(`  note: ${n}`);
  return `scenario ${name} ${s.pass ? 'passed' : 'FAILED'} in ${s.ms} ms:\n${lines.join('\n')}`;
}

describe('links in a user-mode-linux guest (ipvlan, 802.1q, dummy)', () => {
  it('the guest ran every scenario and exited', () => {
    expect(results.uname).toMatch(/^\d+\.\d+/);
    expect(Object.keys(results.scenarios).sort()).toEqual([...SCENARIOS].sort());
    expect(run.umlExit).toEqual({ code: 0, signal: null });
  });

  it.each(CASES)('%s: %s', (name) => {
    const s = results.scenarios[name];
    const text = report(name, s);
    if (!s?.pass) throw new Error(text);
    expect(s.checks.length).toBeGreaterThan(0);
  });
});
