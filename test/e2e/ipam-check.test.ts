/**
 * Issue 15 item 4 on real parts: `underlay ipam check` compares the cluster IPAM with what every host's Docker
 * reports, and `underlay ipam release` repairs a leak. Two hosts (namespaces, a dockerd and an agent each), one
 * controller whose leak collector is slowed down (so the findings stay for the check to show):
 *  - a clean cluster is reported clean (exit 0);
 *  - an address planted through the controller (a node's requestAddress with no container) is an "allocation with
 *    no container" (exit 1); `ipam release` refuses a running container's address, naming it and its host, and
 *    releases the planted one, after which the check is clean again;
 *  - a container removed behind its agent's back (the agent killed, `docker rm -f`, the agent started again: the
 *    removal never reached the controller) leaves its address as an allocation with no container. While the agent is
 *    down a stand-in refuses dockerd's plugin calls at once (dockerd would retry the absent plugin for a minute).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import { BUSYBOX_IMAGE, waitFor, withLab } from '../lab';
import { containerIp, operatorCli, startCluster, type Cluster, type HostNode } from './support/cluster';
import type { IpamCheck } from '@underlay/core';

jest.setTimeout(240_000);
const ctx = withLab({ hosts: ['h1', 'h2'] });
let cluster: Cluster;

const REPORT_MS = 200;
const POOL = 'underlay/192.0.2.0/24';

beforeAll(async () => {
  cluster = await startCluster(ctx.lab, [ctx.host('h1'), ctx.host('h2')], {
    // The collector would reclaim the leaks this test plants before the check shows them: one pass an hour.
    controller: { collectIntervalMs: 3_600_000 },
    reportIntervalMs: REPORT_MS,
    // Reports every 200 ms settle the check fast; the default lease of three intervals (600 ms) lapsed when an agent
    // stalled on a loaded machine (the clean check found h1 "not reporting"). No step here needs a lease to lapse.
    agentArgs: ['--lease-ms', '10000'],
  });
}, 300_000);

const node = (name: string): HostNode => cluster.nodes.get(name)!;

/**
 * A stand-in for a down agent on its plugin socket: answers every call with an error at once (HTTP 500 with the
 * plugin protocol's {"Err": …}) and records the paths called. `close` stops it and removes the socket.
 */
async function refusingPlugin(socketPath: string): Promise<{ calls: string[]; close(): Promise<void> }> {
  const calls: string[] = [];
  const server = http.createServer((req, res) => {
    calls.push(req.url ?? '');
    req.resume();
    res.writeHead(500, { 'Content-Type': 'application/vnd.docker.plugins.v1+json' }).end(JSON.stringify({ Err: 'the underlay agent on this host is down' }));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, resolve));
  const close = async (): Promise<void> => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    fs.rmSync(socketPath, { force: true }); // the agent started next must make its own
  };
  return { calls, close };
}

/** The operator CLI against this cluster's controller. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return operatorCli(cluster, args);
}

/** `underlay ipam check --json` (exit 0 or 1 both answer). */
async function check(): Promise<IpamCheck> {
  const r = await cli(['ipam', 'check', '--json']);
  if (r.code !== 0 && r.code !== 1) throw new Error(`underlay ipam check: exit ${r.code}: ${r.stderr}`);
  const c = JSON.parse(r.stdout) as IpamCheck;
  expect(r.code).toBe(c.clean ? 0 : 1);
  return c;
}

/** The check once nothing is pending (every allocation older than its node's latest report, less the 3 s slack). */
async function settledCheck(what: string, until: (c: IpamCheck) => boolean = () => true): Promise<IpamCheck> {
  return waitFor(async () => {
    const c = await check();
    return c.pending === 0 && until(c) ? c : undefined;
  }, { timeoutMs: 15_000, intervalMs: 250, what });
}

describe('ipam check and release', () => {
  it('reports a clean cluster as clean, a planted leak as an allocation with no container, and releases it', async () => {
    const h1 = node('h1');
    const h2 = node('h2');
    await h1.docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1', '-o', 'parent=eth1', 'n1']);
    await waitFor(async () => (await h2.docker.docker(['network', 'inspect', 'n1'])).code === 0, { timeoutMs: 10_000, what: 'n1 replicated on h2' });
    await h1.docker.dockerOk(['run', '-d', '--name', 'c1', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    await h2.docker.dockerOk(['run', '-d', '--name', 'c2', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip1 = await containerIp(h1.docker, 'c1', 'n1');

    // (a) Clean: exit 0, and it says so.
    await settledCheck('a settled check');
    const clean = await cli(['ipam', 'check']);
    expect({ code: clean.code, out: clean.stdout.split('\n')[0] }).toEqual({ code: 0, out: 'clean: every allocation has its container and every container its allocation (2 nodes reporting)' });

    // (b) An address allocated to h2 through the controller, which no container holds.
    const planted = await cluster.controller.ipam.requestAddress({ node: 'h2', poolId: POOL, address: '', options: {}, requestId: 'planted-leak', kind: 'endpoint' }, { actor: 'node:h2' });
    const leak = planted.address.split('/')[0]!;
    const found = await settledCheck('the planted leak judged', (c) => c.allocationsWithoutContainer.length > 0);
    expect(found.allocationsWithoutContainer.map((a) => [a.address, a.node, a.network, a.reason])).toEqual([[leak, 'h2', 'n1', 'unbound']]);
    expect(found).toMatchObject({ clean: false, findings: 1, containersWithoutAllocation: [], duplicateAddresses: [], goneNodeBlocks: [] });
    const table = await cli(['ipam', 'check']);
    expect(table.code).toBe(1);
    expect(table.stdout).toContain('allocations with no container (1):');
    expect(table.stdout).toMatch(new RegExp(`${leak.replace(/\./g, '\\.')}\\s+n1\\s+h2\\s+unbound\\s+allocated to h2 `));

    // (d) A running container's address is refused, naming the container and its host; the leak is released.
    const refused = await cli(['ipam', 'release', ip1]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`underlay: address ${ip1} of network "n1" is in use by container c1 on h1`);
    const released = await cli(['ipam', 'release', leak, '--network', 'n1']);
    expect({ code: released.code, out: released.stdout, err: released.stderr }).toEqual({ code: 0, out: `released ${leak} of network n1 (allocated to h2, pool ${POOL})\n`, err: '' });
    const again = await cli(['ipam', 'release', leak]);
    expect({ code: again.code, err: again.stderr }).toEqual({ code: 1, err: `underlay: address ${leak} is not allocated\n` });
    const after = await check();
    expect(after.clean).toBe(true);
    // The release is an event in the log, with the operator as its actor.
    const events = await cluster.controller.log.readAll(1);
    const rel = events.filter((e) => e.type === 'AddressReleased' && e.data.address === leak);
    expect(rel.map((e) => [e.actor, (e.data as { reason?: string }).reason])).toEqual([[expect.stringMatching(/^user:/), 'operator release']]);
  });

  it('shows a container removed behind its agent\'s back as an allocation with no container', async () => {
    const h1 = node('h1');
    await h1.docker.dockerOk(['run', '-d', '--name', 'k1', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip = await containerIp(h1.docker, 'k1', 'n1');
    await settledCheck('clean before the kill', (c) => c.clean);
    // The agent dies; the container is removed meanwhile: Docker cannot tell the plugin, so the controller still
    // has the address, bound to an endpoint that no longer exists. dockerd retries a plugin it cannot connect to for
    // 30 s per call before it gives up and removes the container anyway (60.4 s for this removal, measured): while the
    // agent is down, a stand-in on its socket refuses every call at once instead (as a plugin that is up but failing
    // would), so dockerd gives up at once. Docker removes the container either way, and no agent hears of it.
    await cluster.stopAgent('h1', 'SIGKILL');
    const standIn = await refusingPlugin(h1.docker.pluginSocket());
    const t0 = Date.now();
    const rm = await h1.docker.docker(['rm', '-f', 'k1']).finally(() => standIn.close());
    const rmMs = Date.now() - t0;
    expect(rm.code).toBe(0);
    // dockerd did try to tell the plugin (and was refused): the removal happened behind the agent's back, not around Docker.
    expect(standIn.calls.filter((c) => c.startsWith('/NetworkDriver.'))).not.toEqual([]);
    await cluster.restartAgent('h1');
    const found = await settledCheck('the removed container\'s address judged', (c) => c.allocationsWithoutContainer.length > 0 && c.nodes.ready.includes('h1'));
    expect(found.allocationsWithoutContainer.map((a) => [a.address, a.node, a.network, a.reason])).toEqual([[ip, 'h1', 'n1', 'endpoint-gone']]);
    expect(found.findings).toBe(1);
    const table = await cli(['ipam', 'check']);
    expect(table.code).toBe(1);
    expect(table.stdout).toContain('which h1 no longer reports (its container is gone)');
    // The operator releases it; the cluster is clean again.
    expect((await cli(['ipam', 'release', ip])).code).toBe(0);
    expect((await check()).clean).toBe(true);
    // eslint-disable-next-line no-console
    console.log(`docker rm -f with the agent down took ${rmMs} ms; the stand-in refused ${standIn.calls.join(', ')}`);
  });
});
