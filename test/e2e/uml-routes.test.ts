/**
 * Routes between hosts for ipvlan L3 (issue 6), in a user-mode-linux guest (the host kernel has no ipvlan).
 * One boot runs test/uml/routes/guest.js: three hosts h1..h3 (network namespaces on a bridge, eth1 =
 * 198.51.100.N/24), each with its own dockerd 20.10 and real agent (`underlay agent --address …`), one
 * etcd + nats-server + controller (block grace 3 s, collector every 1 s) on the bridge. One ipvlan l3
 * network with two subnets and block_size=28; containers: c1 on h1 (dynamic: a /28 block of either subnet: the docker CLI orders --subnet flags at random), c2 on
 * h2 (--ip 203.0.113.20: an address outside any block, a /32 route), c3 on h3 (another /28 block).
 * Checked: every host gets a proto-201 route to every other host's container via that host; containers on
 * different hosts and subnets ping each other; a route deleted by hand comes back within the reconcile
 * interval; an agent restart deletes no correct route (ip monitor) but removes a stale proto-201 route added
 * by hand and leaves a static route alone; removing c2 removes its /32 everywhere; removing c3 removes its
 * block's route everywhere after the block grace period.
 *
 * Needs root, user-mode-linux, docker.io, busybox, iproute2, etcd, nats-server, node and a build
 * (`npx tsc -b`). Fails (never skips) when something is missing.
 *
 * Run: npx jest --selectProjects e2e --runTestsByPath test/e2e/uml-routes.test.ts
 * Debug: UML_ROUTES_KEEP=1 keeps the run's temp dir.
 */
import { describeSteps, runGuestScript, tail, type GuestStep, type UmlResult } from '../uml/uml';

const BUDGET_MS = Number(process.env.UML_ROUTES_TIMEOUT_MS ?? 420_000);
const RECONCILE_MS = 2000;

interface Route {
  dst: string;
  via: string;
  dev: string;
}
interface Container {
  host: string;
  name: string;
  ip: string;
}
interface Results {
  uname: string;
  steps: GuestStep[];
  setup: { ok: boolean };
  agentFlags?: { address: boolean; routeReconcile: boolean };
  network?: { createdOn: string[]; replicated: string[] };
  containers?: Record<'c1' | 'c2' | 'c3', Container | undefined>;
  routes: { convergeMs?: number; afterContainers?: Record<string, Route[]>; end?: Record<string, Route[]> };
  pings: Record<string, { from: string; to: string; ok: boolean; output: string }>;
  handDelete: { route?: Route; deleted?: boolean; restoredMs?: number; reconcileMs?: number };
  restart: { before?: Route[]; after?: Route[]; stale?: Route; foreign?: Route; staleGoneMs?: number; monitor?: string; staticAfter?: string };
  release: { addressMs?: number; block?: Route; blockMs?: number; blockGraceMs?: number };
  logs: Record<string, string>;
  totalMs: number;
  error?: string;
}

jest.setTimeout(BUDGET_MS + 60_000);

let run: UmlResult;
let r: Results;

beforeAll(async () => {
  const need = ['/usr/sbin/dockerd', '/usr/bin/docker', 'cli/bin/underlay.js', 'services/node-agent/dist/routes/index.js', 'services/controller/dist'];
  ({ run, result: r } = await runGuestScript<Results>(need, {
    script: 'exec node test/uml/routes/guest.js "$UML_RESULT"\n',
    timeoutMs: BUDGET_MS,
    memMb: 3072,
    keepDir: process.env.UML_ROUTES_KEEP === '1',
  }));
  const t = run.timings;
  console.log(
    `uml-routes: kernel ${r.uname}, network created on ${r.network?.createdOn.join(',')} replicated to ${r.network?.replicated.join(',') || 'none'}, boot ${t.bootMs} ms, script ${t.scriptMs} ms, total ${t.totalMs} ms; ` +
      `routes converged in ${r.routes.convergeMs} ms, hand-deleted route back in ${r.handDelete.restoredMs} ms, ` +
      `stale route gone ${r.restart.staleGoneMs} ms after restart (${r.restart.before?.length} routes kept), /32 gone ${r.release.addressMs} ms after rm, block route gone ${r.release.blockMs} ms after rm` +
      (process.env.UML_ROUTES_KEEP === '1' ? `, dir ${run.dir}` : ''),
  );
}, BUDGET_MS + 60_000);

function context(): string {
  const steps = describeSteps(r.steps);
  const logs = Object.entries(r.logs)
    .filter(([k]) => !k.startsWith('dockerd') || /error|fail/i.test(r.logs[k] ?? ''))
    .map(([k, v]) => `--- ${k} ---\n${tail(v, 20)}`)
    .join('\n');
  return `steps:\n${steps}${r.error ? `\nguest error: ${r.error}` : ''}\n${logs}`;
}
function ok(cond: unknown, what: string): void {
  if (!cond) throw new Error(`${what}\n${context()}`);
}
const addrOf = (h: string) => `198.51.100.${h.slice(1)}`;
const ipToInt = (ip: string) => ip.split('.').reduce((a, b) => a * 256 + Number(b), 0);
const covers = (cidr: string, ip: string) => {
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  return Math.floor(ipToInt(ip) / size) === Math.floor(ipToInt(net!) / size);
};
const routeTo = (routes: Route[] | undefined, ip: string) =>
  (routes ?? []).filter((x) => covers(x.dst, ip)).sort((a, b) => Number(b.dst.split('/')[1]) - Number(a.dst.split('/')[1]))[0];

describe('routes between hosts for an ipvlan l3 network, three hosts with dockerd in user-mode-linux', () => {
  it('three dockerds, agents, etcd, NATS and the controller come up; the l3 network exists on every host', () => {
    ok(r.setup.ok, 'setup failed');
    ok(r.network && r.network.createdOn.length + r.network.replicated.length === 3, 'the network is not on all three hosts');
    ok(r.containers?.c1 && r.containers.c2 && r.containers.c3, 'containers did not all start');
    // Dynamic addresses come from the network's first pool. On h1 that is whichever --subnet the docker CLI put
    // first (it collects them in a Go map: random order); a replica lists the subnets sorted, so c3 is in 192.0.2.0/24
    // and c2 (static) in 203.0.113.0/24: always two subnets.
    expect(r.containers!.c1!.ip).toMatch(/^(192\.0\.2|203\.0\.113)\.\d+$/);
    expect(r.containers!.c2!.ip).toBe('203.0.113.20');
    expect(r.containers!.c3!.ip).toMatch(/^192\.0\.2\./);
  });

  it('every host has a proto-201 route to each other host\'s container, via that host, out of the parent', () => {
    ok(r.routes.convergeMs !== undefined, 'routes did not converge within 20 s');
    const all = r.routes.afterContainers!;
    for (const c of Object.values(r.containers!)) {
      for (const h of ['h1', 'h2', 'h3'].filter((x) => x !== c!.host)) {
        const rt = routeTo(all[h], c!.ip);
        ok(rt, `no route to ${c!.name} ${c!.ip} on ${h}: ${JSON.stringify(all[h])}`);
        expect(rt).toMatchObject({ via: addrOf(c!.host), dev: 'eth1' });
      }
      // No route on the container's own host.
      expect(routeTo(all[c!.host], c!.ip)).toBeUndefined();
    }
    // Blocks are /28 (block_size=28); c2's static address outside any block is a /32.
    expect(routeTo(all.h1, r.containers!.c3!.ip)!.dst).toMatch(/\/28$/);
    expect(routeTo(all.h1, r.containers!.c2!.ip)!.dst).toBe('203.0.113.20/32');
  });

  it('containers on different hosts and in different subnets ping each other', () => {
    for (const k of ['c1->c2', 'c2->c1', 'c1->c3', 'c3->c2']) {
      const p = r.pings[k];
      ok(p, `ping ${k} did not run`);
      ok(p!.ok, `ping ${k} (${p!.from} -> ${p!.to}) failed:\n${p!.output}`);
    }
  });

  it('a route deleted by hand comes back within the reconcile interval', () => {
    ok(r.handDelete.deleted, 'the route could not be deleted by hand');
    ok(r.handDelete.restoredMs !== undefined, 'the route did not come back');
    expect(r.handDelete.restoredMs!).toBeLessThanOrEqual(RECONCILE_MS + 1500);
  });

  it('an agent restart deletes no correct route, removes a stale proto-201 route and leaves a static one', () => {
    const { before, after, stale, foreign, monitor, staticAfter } = r.restart;
    ok(r.restart.staleGoneMs !== undefined, 'the stale proto-201 route was not removed after the restart');
    const key = (x: Route) => `${x.dst} ${x.via} ${x.dev}`;
    expect(new Set(after!.map(key))).toEqual(new Set(before!.map(key)));
    // ip monitor saw exactly one deletion: the stale route; no correct route was deleted or re-added.
    const deleted = (monitor ?? '').split('\n').filter((l) => /Deleted/.test(l));
    ok(deleted.length === 1 && deleted[0]!.includes(stale!.dst), `unexpected deletions during the restart:\n${monitor}`);
    const readded = (monitor ?? '').split('\n').filter((l) => !/Deleted/.test(l) && before!.some((b) => l.includes(b.dst.replace(/\/32$/, ''))));
    ok(readded.length === 0, `correct routes were re-added (flap):\n${monitor}`);
    expect(staticAfter).toContain(foreign!.dst.replace(/\/\d+$/, ''));
    ok(r.pings['c1->c2 after agent restart']?.ok, 'ping after the restart failed');
  });

  it('releasing an address outside any block removes its /32 everywhere; releasing a block removes its route', () => {
    ok(r.release.addressMs !== undefined, 'the /32 route to c2 stayed after c2 was removed');
    ok(r.release.blockMs !== undefined, 'the block route to c3 stayed after c3 was removed and the grace period passed');
    expect(r.release.block?.dst).toMatch(/\/28$/);
    for (const h of ['h1', 'h2']) expect(routeTo(r.routes.end![h], r.containers!.c3!.ip)).toBeUndefined();
    for (const h of ['h1', 'h3']) expect(routeTo(r.routes.end![h], '203.0.113.20')).toBeUndefined();
  });
});
