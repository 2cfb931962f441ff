/**
 * A real dockerd 20.10 INSIDE a user-mode-linux guest (test/uml/uml.ts), driving the product as a
 * Docker remote network + IPAM plugin on ipvlan, a link kind the host kernel lacks. One boot runs
 * test/uml/docker/guest.js, which starts dockerd (vfs, no bridge/iptables, its own containerd,
 * cgroup v2 / cgroupfs), `underlay up` (etcd + nats + controller + agent serving
 * /run/docker/plugins/underlay.sock), imports a busybox image, and for ipvlan_mode l2 and l3:
 * `docker network create -d underlay --ipam-driver underlay -o parent=eth1 -o ipvlan_mode=M`,
 * two `docker run` containers, ping both ways, `docker rm -f`, `docker network rm`. Then host access for each mode
 * (203.0.113.1/24 on eth1 is the host's): without `-o host_access=true` the host and its container do not reach each
 * other; with it they ping both ways through the host's shim, which goes with the network. (The steps list shows the
 * two pings of each run without the option as FAIL: they are expected to fail, and asserted so.)
 * eth1 is one end of a veth pair inside the guest. Nothing touches the host's network or files
 * outside the run's temp dir (the guest mounts tmpfs over everything dockerd writes).
 *
 * Needs root, Debian's user-mode-linux, docker.io (/usr/sbin/dockerd, /usr/bin/docker,
 * containerd, runc), busybox, iproute2, etcd, nats-server, node, and a build (`npx tsc -b`).
 * Fails (never skips) when something is missing.
 *
 * Time budgets: every guest step has one (measured × margin × this machine's factor: test/uml/budget.ts);
 * a slow step fails the run naming it ("guest step 'dockerd start' took longer than N s"). The measured
 * durations are printed.
 *
 * Run: npx jest --selectProjects e2e --runTestsByPath test/e2e/uml-docker.test.ts
 * Debug: UML_DOCKER_KEEP=1 keeps the run's temp dir; UML_DOCKERD_DEBUG=1 runs dockerd --debug;
 * UML_BUDGET_SCALE=0.05 shows what an overrun looks like.
 */
import { jestTimeoutMs } from '../uml/budget';
import { describeSteps, reportGuestRun, runGuestScript, tail, type GuestBudgetInfo, type GuestStep, type UmlResult } from '../uml/uml';

const SUITE = 'uml-docker';

interface ContainerResult {
  started: boolean;
  ip?: string;
  error?: string;
  links?: string;
}
interface NetworkResult {
  mode: string;
  name: string;
  subnet: string;
  created: boolean;
  inspect?: { Driver?: string; IPAM?: { Driver?: string; Config?: Array<{ Subnet?: string }> }; Options?: Record<string, string> };
  containers: Record<string, ContainerResult>;
  ping: Record<string, { ok: boolean; output: string }>;
  containersRemoved?: boolean;
  removed: boolean;
  errors: string[];
  linksAfter?: string;
}
interface HostAccessResult {
  mode: string;
  on: boolean;
  created: boolean;
  shim?: string;
  ip?: string;
  shimAddress?: string;
  shimLink?: string;
  routes?: string;
  ping: { host?: { ok: boolean; ran: boolean; output: string }; container?: { ok: boolean; ran: boolean; output: string; target: string } };
  removed?: boolean;
  linksAfter?: string;
  routesAfter?: string;
  errors: string[];
}
interface Results {
  hostAccess?: Record<string, HostAccessResult>;
  uname: string;
  node: string;
  modes: string[];
  steps: GuestStep[];
  setup: { ok: boolean };
  networks: Record<string, NetworkResult>;
  dockerdLogTail: string;
  underlayLogTail: string;
  budgets: GuestBudgetInfo;
  durations: Record<string, number>;
  totalMs: number;
  error?: string;
}

jest.setTimeout(jestTimeoutMs(SUITE));

let run: UmlResult;
let results: Results;

const REQUIRED = ['/usr/sbin/dockerd', '/usr/bin/docker', '/usr/bin/containerd', '/usr/bin/containerd-shim-runc-v2', 'cli/bin/underlay.js', 'services/node-agent/dist', 'services/controller/dist'];

beforeAll(async () => {
  ({ run, result: results } = await runGuestScript<Results>(REQUIRED, {
    script: 'exec node test/uml/docker/guest.js "$UML_RESULT" l2 l3\n',
    suite: SUITE,
    memMb: 1024,
    keepDir: process.env.UML_DOCKER_KEEP === '1',
    env: Object.fromEntries(['UML_DOCKERD_DEBUG', 'UML_UNDERLAY_CLI'].filter((k) => process.env[k]).map((k) => [k, process.env[k]!])),
  }));
  const t = run.timings;
  console.log(
    `uml-docker: kernel ${results.uname}, boot ${t.bootMs} ms, setup ${t.setupMs} ms, script ${t.scriptMs} ms, shutdown ${t.shutdownMs} ms, total ${t.totalMs} ms` +
      (process.env.UML_DOCKER_KEEP === '1' ? `, dir ${run.dir}` : '') +
      `\n${describeSteps(results.steps)}`,
  );
  reportGuestRun(SUITE, run, results); // prints every step's duration and budget; throws naming any step that overran
}, jestTimeoutMs(SUITE));

function context(): string {
  return (
    `steps:\n${describeSteps(results.steps)}` +
    (results.error ? `\nguest error: ${results.error}` : '') +
    `\n--- dockerd log (tail) ---\n${tail(results.dockerdLogTail, 25)}\n--- underlay up log (tail) ---\n${tail(results.underlayLogTail, 25)}`
  );
}

function expectOk(cond: boolean, what: string): void {
  if (!cond) throw new Error(`${what}\n${context()}`);
}

describe('dockerd 20.10 in a user-mode-linux guest with the underlay plugin on ipvlan', () => {
  // Host access (-o host_access=true): the guest's root namespace is the host, 203.0.113.1/24 on the parent eth1; the
  // network 203.0.113.0/24 with --ip-range 203.0.113.128/25. Without the option the host and its container do not
  // reach each other (as with Docker's ipvlan); with it the host's ipvlan shim ulh<id> holds a /32 from the cluster
  // IPAM, routes the host's block (proto 202), and both ping; the shim goes with the network.
  describe.each([['l2'], ['l3']])('host access on ipvlan_mode=%s', (mode) => {
    const ha = (on: boolean): HostAccessResult => {
      const h = results.hostAccess?.[`${mode}-${on ? 'on' : 'off'}`];
      expectOk(h !== undefined, `host access ${mode} ${on ? 'on' : 'off'} was not attempted`);
      expectOk(h!.created && !!h!.ip && h!.ping.host?.ran === true && h!.ping.container?.ran === true, `host access ${mode} ${on ? 'on' : 'off'} did not get to its pings: ${JSON.stringify(h)}`);
      return h!;
    };

    it('without host_access the host and its container cannot reach each other', () => {
      const h = ha(false);
      expectOk(!h.ping.host!.ok, `the host reached its container without host_access:\n${h.ping.host!.output}`);
      expectOk(!h.ping.container!.ok, `the container reached its host without host_access:\n${h.ping.container!.output}`);
      expect(h.removed).toBe(true);
    });

    it('with host_access=true the host and its container ping each other through the shim, which goes with the network', () => {
      const h = ha(true);
      expect(h.shimLink).toMatch(new RegExp(`ipvlan\\s+mode ${mode} bridge`));
      expect(h.shimAddress).toMatch(/^203\.0\.113\.\d+\/32$/);
      expect(h.shimAddress).not.toBe(`${h.ip}/32`);
      expect(h.routes).toMatch(new RegExp(`^203\\.0\\.113\\.\\d+/\\d+ dev ${h.shim} proto 202 scope link`, 'm'));
      expectOk(h.ping.host!.ok, `the host did not reach its container ${h.ip}:\n${h.ping.host!.output}\nroutes:\n${h.routes}`);
      expectOk(h.ping.container!.ok, `the container did not reach the host's ${h.ping.container!.target}:\n${h.ping.container!.output}`);
      expect(h.removed).toBe(true);
      expect(h.linksAfter).not.toMatch(/^ulh/m);
      expect(h.routesAfter?.trim()).toBe('');
    });
  });

  it('dockerd, the plugin and the busybox image come up in the guest', () => {
    expect(results.uname).toMatch(/^\d+\.\d+/);
    expectOk(results.setup.ok, 'setup failed (mounts, veth parent, dockerd, underlay up or docker import)');
  });

  describe.each([
    ['l2', '192.0.2.'],
    ['l3', '198.51.100.'],
  ])('ipvlan_mode=%s', (mode, prefix) => {
    const net = (): NetworkResult => {
      const n = results.networks[mode];
      expectOk(n !== undefined, `network for ${mode} was not attempted`);
      return n!;
    };

    it('docker network create -d underlay --ipam-driver underlay -o parent=eth1 succeeds', () => {
      const n = net();
      expectOk(n.created, `network create failed: ${n.errors.join('\n')}`);
      expect(n.inspect?.Driver).toBe('underlay');
      expect(n.inspect?.IPAM?.Driver).toBe('underlay');
      expect(n.inspect?.Options).toMatchObject({ parent: 'eth1', ipvlan_mode: mode });
    });

    it('two containers start with distinct addresses in the subnet', () => {
      const n = net();
      const cs = Object.entries(n.containers);
      expect(cs).toHaveLength(2);
      for (const [name, c] of cs) expectOk(c.started, `docker run ${name} failed: ${c.error}`);
      const ips = cs.map(([, c]) => c.ip ?? '');
      for (const ip of ips) expect(ip.startsWith(prefix)).toBe(true);
      expect(new Set(ips).size).toBe(2);
      // The container's eth0 is an ipvlan slave in the requested mode (iproute2 `ip -d`: "ipvlan  mode l2 bridge").
      for (const [, c] of cs) expect(c.links).toMatch(new RegExp(`ipvlan\\s+mode ${mode}\\b`));
    });

    it('the containers ping each other', () => {
      const n = net();
      const pings = Object.entries(n.ping);
      expectOk(pings.length === 2, `no pings ran (containers did not both start): ${n.errors.join('\n')}`);
      for (const [pair, p] of pings) expectOk(p.ok, `ping ${pair} failed:\n${p.output}`);
    });

    it('docker rm -f then docker network rm succeed', () => {
      const n = net();
      expectOk(n.containersRemoved === true, `docker rm -f failed: ${n.errors.join('\n')}`);
      expectOk(n.removed, `docker network rm failed: ${n.errors.join('\n')}`);
      // The parent eth1 existed before (veth), so it stays; no endpoint link is left in the guest's root namespace.
      expect(n.linksAfter).toMatch(/^eth1@/m);
      expect(n.linksAfter).not.toMatch(/^ul/m);
    });
  });
});
