/**
 * While no controller leads (an election under way, etcd slow to answer a keepalive), an agent's reports are heard by
 * the standbys but answered by nobody. Each report must give up within its interval (the agent's `reportCallOptions`),
 * so the next goes out on time and the node stays seen: an agent whose report waited out the RPC's 10 s attempt timeout
 * went unseen long enough for the new leader's collector to take its running containers' addresses as a dead node's
 * (`node-expired`; seen in test/e2e/two-hosts on a loaded machine).
 *
 * Real etcd, NATS and controller; the agent's controller client with the agent's report options; the leader key is held
 * by a lease of the test's, so the controller waits as a standby.
 */
import { Etcd3 } from 'etcd3';
import { Controller } from '@underlay/controller';
import { keys } from '@underlay/adapters';
import { rpcControllerClient } from '../../services/node-agent/src/driver/controller-client';
import { reportCallOptions } from '../../services/node-agent/src/status';
import { waitFor } from '../lab/wait';
import { startEnv, type Env } from './support';

jest.setTimeout(120_000);
let env: Env;
let etcd: Etcd3;
let controller: Controller | undefined;
beforeAll(async () => {
  env = await startEnv();
  etcd = new Etcd3({ hosts: env.etcd.url });
});
afterAll(async () => {
  await controller?.stop().catch(() => {});
  etcd?.close();
  await env?.close();
});

it('keeps a node seen while no controller leads: each unanswered report gives up within its interval, the standby records it', async () => {
  // Somebody else holds the leader key: the controller campaigns and waits as a standby.
  const lease = etcd.lease(60, { autoKeepAlive: true });
  await lease.put(keys.leader).value('someone-else');
  controller = new Controller({ etcd: [env.etcd.url], nats: env.nats.url, listen: '127.0.0.1:0', name: 'standby', nodeExpiredMs: 5_000 });
  await controller.start();
  expect(controller.role).toBe('standby');

  const agent = rpcControllerClient(await env.client());
  const report = { node: 'h1', endpoints: [], endpointStates: [], networkStates: [] };
  const times: number[] = [];
  const seen: number[] = [];
  // An agent's reporter: one report at a time, every 200 ms, each with the interval as its deadline.
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await expect(agent.nodeReport(report, reportCallOptions(200))).rejects.toMatchObject({ code: 'unavailable' });
    times.push(performance.now() - t0);
    await waitFor(() => controller!.nodes.get('h1') !== undefined && controller!.nodes.get('h1')!.lastSeenMs > (seen.at(-1) ?? 0), { timeoutMs: 5_000, intervalMs: 10, what: `report ${i + 1} recorded by the standby` });
    seen.push(controller.nodes.get('h1')!.lastSeenMs);
  }
  // Each call ended near its interval (not after the RPC's 10 s attempt timeout), and the standby heard every report:
  // the node stays ready.
  expect(times.map((ms) => ({ ms: Math.round(ms), within: ms < 3_000 }))).toEqual(times.map((ms) => ({ ms: Math.round(ms), within: true })));
  expect(controller.nodes.ready('h1')).toBe(true);

  // The leader key goes: the standby takes over and answers the next report.
  await lease.revoke();
  await controller.whenLeader();
  await agent.nodeReport(report, reportCallOptions(5_000));
  expect(controller.nodes.ready('h1')).toBe(true);
});
