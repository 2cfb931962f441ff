/**
 * The agent's state survives damage, on real parts (a host namespace with its own dockerd and a real agent
 * process, a controller on real etcd and NATS) with a leak collector running every 200 ms on short periods:
 *  - the state directory wiped while a container runs, the agent restarted: it logs the rebuild from Docker and
 *    the controller, the container keeps its address (and is pingable), new containers get other addresses, no
 *    collector pass reclaims the live address, and `docker rm` later releases it normally;
 *  - a corrupt allocations file: the agent starts, logs it, moves it aside with its journal and rebuilds it;
 *  - between the two, an allocation is a line appended to the journal, the snapshot is not rewritten.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BUSYBOX_IMAGE, waitFor, withLab } from '../lab';
import { containerIp, startCluster, type Cluster, type HostNode } from './support/cluster';

jest.setTimeout(300_000);
const ctx = withLab({ hosts: ['h1'] });
let cluster: Cluster;

const POOL = 'underlay/192.0.2.0/24';

beforeAll(async () => {
  cluster = await startCluster(ctx.lab, [ctx.host('h1')], {
    // Short leak periods: a live address would be taken within a second or two if the node's report missed it.
    controller: { collectIntervalMs: 200, unboundGraceMs: 1_000, reportSlackMs: 500, nodeExpiredMs: 120_000, blockGraceMs: 1_000 },
    reportIntervalMs: 200,
    // `docker rm` holds a container's address this long for a restart (default 60 s), then releases it.
    agentArgs: ['--address-hold-ms', '2000'],
  });
}, 300_000);

const h1 = (): HostNode => cluster.nodes.get('h1')!;
const agentLog = () => fs.readFileSync(h1().agent.logFile, 'utf8');

/** Releases the collector made of `address` ("leak: …"), from the event log in etcd. */
async function leakReleases(address: string): Promise<unknown[]> {
  const events = await cluster.controller.log.readAll(1);
  return events.filter((e) => e.type === 'AddressReleased' && e.data.address === address && String(e.data.reason ?? '').startsWith('leak'));
}

/** The allocation of `address` in the pool, as the controller holds it. */
const allocOf = (address: string) => {
  const p = cluster.controller.writer.state.pools.get(POOL)!;
  return [...p.allocs.entries()].find(([v]) => v === p.cidr.network + BigInt(Number(address.split('.')[3])))?.[1];
};

async function waitPasses(n: number): Promise<void> {
  const from = cluster.controller.collector!.passes;
  await waitFor(() => cluster.controller.collector!.passes >= from + n, { timeoutMs: 30_000, what: `${n} collector passes` });
}

describe('agent state', () => {
  it('keeps a running container\'s address when the state directory is wiped and the agent restarted; the collector takes nothing live', async () => {
    const n = h1();
    await n.docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1', '-o', 'parent=eth1', 'n1']);
    await n.docker.dockerOk(['run', '-d', '--name', 'c1', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip1 = await containerIp(n.docker, 'c1', 'n1');
    const ep1 = (await n.docker.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "n1").EndpointID}}', 'c1'])).trim();
    expect(ip1).toMatch(/^192\.0\.2\.\d+$/);
    const seq1 = allocOf(ip1)!.seq;
    expect(allocOf(ip1)!.endpointId).toBe(ep1);

    // Stop the agent, wipe its state directory, start it again.
    await cluster.stopAgent('h1');
    fs.rmSync(n.stateDir, { recursive: true, force: true });
    fs.mkdirSync(n.stateDir, { recursive: true });
    const logBefore = agentLog().length;
    await cluster.restartAgent('h1');
    await waitFor(() => agentLog().slice(logBefore).includes('rebuilt from the controller'), { timeoutMs: 20_000, what: 'the agent to log its rebuild from the controller' });
    const log = agentLog().slice(logBefore);
    expect(log).toContain(`rebuilt from Docker: 1 networks (n1) and 1 endpoints (c1 ${ip1}/24)`);
    expect(log).toMatch(/the allocations file was missing; rebuilt from the controller: 2 allocations/); // the gateway and c1's
    // The rebuilt store is on disk: the network, c1's endpoint, and its allocation with the controller's seq.
    const allocFile = JSON.parse(fs.readFileSync(path.join(n.stateDir, 'allocations.json'), 'utf8')) as Record<string, { seq: number }>;
    expect(allocFile[`${POOL}|${ip1}`]).toEqual({ seq: seq1 });
    expect(fs.existsSync(path.join(n.stateDir, 'endpoints', `${ep1}.json`))).toBe(true);
    const snapshotAt = fs.statSync(path.join(n.stateDir, 'allocations.json'));

    // The container kept its address; a new container gets another one, and they ping each other.
    expect(await containerIp(n.docker, 'c1', 'n1')).toBe(ip1);
    await n.docker.dockerOk(['run', '-d', '--name', 'c2', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip2 = await containerIp(n.docker, 'c2', 'n1');
    expect(ip2).toMatch(/^192\.0\.2\.\d+$/);
    expect(ip2).not.toBe(ip1);
    // c2's allocation is a line appended to the journal; the snapshot the rebuild wrote is not rewritten.
    const journal = fs.readFileSync(path.join(n.stateDir, 'allocations.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(journal).toContainEqual({ op: 'set', poolId: POOL, address: ip2, seq: allocOf(ip2)!.seq });
    const snapshotNow = fs.statSync(path.join(n.stateDir, 'allocations.json'));
    expect([snapshotNow.ino, snapshotNow.mtimeMs]).toEqual([snapshotAt.ino, snapshotAt.mtimeMs]);
    await n.docker.dockerOk(['exec', 'c2', 'ping', '-c', '2', '-W', '3', ip1]);
    // c2's address is bound to its endpoint at once (the rebuilt network knows its pool).
    const ep2 = (await n.docker.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "n1").EndpointID}}', 'c2'])).trim();
    expect(allocOf(ip2)!.endpointId).toBe(ep2);

    // Many collector passes with short periods: nothing live is reclaimed. Positive control in the same window: an
    // address h1 holds that no container uses (allocated, never bound) is reclaimed, so the collector does run its rules.
    const orphan = await cluster.controller.ipam.requestAddress({ node: 'h1', poolId: POOL, address: '', options: {}, requestId: 'orphan-1', kind: 'endpoint' }, { actor: 'node:h1' });
    const orphanIp = orphan.address.split('/')[0]!;
    await waitFor(async () => (await leakReleases(orphanIp)).length > 0, { timeoutMs: 30_000, what: `the collector to reclaim the unbound ${orphanIp}` });
    await waitPasses(15);
    expect(cluster.controller.collector!.reclaimed.map((c) => c.address)).toEqual([orphanIp]);
    expect(await leakReleases(ip1)).toEqual([]);
    expect(await leakReleases(ip2)).toEqual([]);
    expect(allocOf(ip1)).toMatchObject({ seq: seq1, endpointId: ep1, node: 'h1' });
    await n.docker.dockerOk(['exec', 'c1', 'ping', '-c', '1', '-W', '3', ip2]);

    // docker rm releases c1's address as usual once its hold ends (the rebuilt allocation carries its seq); the
    // collector, every 200 ms, leaves it while held.
    await n.docker.dockerOk(['rm', '-f', 'c1']);
    await waitFor(() => allocOf(ip1) === undefined, { timeoutMs: 10_000, what: `${ip1} released after docker rm and its 2 s hold` });
    const releases = (await cluster.controller.log.readAll(1)).flatMap((e) => (e.type === 'AddressReleased' && e.data.address === ip1 ? [e.data] : []));
    expect(releases.map((d) => ({ allocSeq: d.allocSeq, reason: d.reason }))).toEqual([{ allocSeq: seq1, reason: undefined }]);
  });

  it('starts with a corrupt allocations file: logs it, moves it aside and rebuilds it', async () => {
    const n = h1();
    const ip2 = await containerIp(n.docker, 'c2', 'n1');
    await cluster.stopAgent('h1');
    const file = path.join(n.stateDir, 'allocations.json');
    fs.writeFileSync(file, '{"underlay/192.0.2.0/24|192.0.2.9": {"se');
    const logBefore = agentLog().length;
    await cluster.restartAgent('h1');
    await waitFor(() => agentLog().slice(logBefore).includes('rebuilt from the controller'), { timeoutMs: 20_000, what: 'the agent to rebuild its allocations' });
    const log = agentLog().slice(logBefore);
    expect(log).toMatch(new RegExp(`state file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not valid JSON: .*; moved aside to ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.corrupt-`));
    // Its journal (c2's allocation, c1's release) holds changes to it: moved aside with it.
    expect(log).toContain(`state file ${path.join(n.stateDir, 'allocations.log')} holds changes to ${file}, which was damaged; moved aside to ${path.join(n.stateDir, 'allocations.log')}.corrupt-`);
    const aside = fs.readdirSync(n.stateDir).filter((f) => f.startsWith('allocations.json.corrupt-'));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(n.stateDir, aside[0]!), 'utf8')).toContain('192.0.2.9');
    const rebuilt = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, { seq: number }>;
    expect(rebuilt[`${POOL}|${ip2}`]).toEqual({ seq: allocOf(ip2)!.seq });
    // The agent serves: a new container starts and gets its own address; passes later nothing live was taken.
    await n.docker.dockerOk(['run', '-d', '--name', 'c3', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip3 = await containerIp(n.docker, 'c3', 'n1');
    expect([ip2, '192.0.2.1']).not.toContain(ip3);
    const reclaimedBefore = cluster.controller.collector!.reclaimed.length; // the first test's positive control
    await waitPasses(10);
    expect(cluster.controller.collector!.reclaimed.slice(reclaimedBefore)).toEqual([]);
    await n.docker.dockerOk(['exec', 'c3', 'ping', '-c', '1', '-W', '3', ip2]);
    await n.docker.dockerOk(['rm', '-f', 'c2', 'c3']);
    await n.docker.dockerOk(['network', 'rm', 'n1']);
  });
});
