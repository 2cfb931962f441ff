/**
 * The agent serves its plugin socket from its first moment (services/node-agent/src/startup-gate.ts). dockerd
 * disables a managed plugin that does not listen within ~9.5 s of its start, and after a power cut the agent's own
 * start-up can wait longer than that: on NATS, on Docker's API (which answers only once dockerd restored its
 * containers). A CI run lost that race (the plugin stayed disabled after the power cut of managed-plugin.test.ts).
 *
 * Here a real agent process starts in a lab host while NATS cannot be reached (a relay on the lab bridge drops every
 * connection until the test opens it): the socket answers Plugin.Activate and the capability questions at once,
 * the authorization hook allows ordinary requests, a pool request fails after --startup-wait-ms naming what the
 * agent waits for, and a pool request made while it waits succeeds once NATS can be reached. No timing is asserted:
 * the waits are bounded and name their step.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Controller } from '@underlay/controller';
import { startLabEtcd, startLabNats, waitFor, withLab, type Proc } from '../lab';
import { pipeSockets } from '../lab/relay';
import { CLI, ensureBuilt, pluginPost } from './support/cluster';

jest.setTimeout(180_000);
const ctx = withLab({ hosts: ['h1'] });

/** A TCP relay to NATS that drops every connection until opened. */
interface Relay {
  port: number;
  open(): void;
  close(): Promise<void>;
}

async function startRelay(host: string, target: { host: string; port: number }): Promise<Relay> {
  let open = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
    if (!open) {
      c.destroy();
      return;
    }
    const up = net.connect(target.port, target.host);
    sockets.add(up);
    pipeSockets(c, up);
  });
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    open: () => void (open = true),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

let agent: Proc;
let socketPath: string;
let relay: Relay;
let natsUrl: string;

beforeAll(async () => {
  await ensureBuilt();
  const lab = ctx.lab;
  const [etcd, nats] = await Promise.all([startLabEtcd(lab), startLabNats(lab)]);
  const controller = new Controller({ etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name: 'e2e' });
  await controller.start();
  await controller.whenLeader();
  lab.onDestroy('controller', () => controller.stop());
  const u = new URL(nats.url);
  relay = await startRelay(lab.bridgeAddress, { host: u.hostname, port: Number(u.port) });
  lab.onDestroy('nats relay', () => relay.close());
  natsUrl = `nats://${lab.bridgeAddress}:${relay.port}`;
  const dir = path.join(lab.dir, 'agent-h1');
  const pluginDir = path.join(dir, 'plugins');
  socketPath = path.join(pluginDir, 'underlay.sock');
  agent = lab.spawnIn('h1', process.execPath, [
    CLI, 'agent', '--node', 'h1', '--nats', natsUrl, '--plugin-dir', pluginDir, '--state-dir', path.join(dir, 'state'),
    '--docker', `unix://${path.join(dir, 'no-docker.sock')}`, '--startup-wait-ms', '8000', '--address', '198.51.100.1',
  ], { name: 'agent' });
}, 120_000);

describe('the agent while it starts', () => {
  it('answers Docker\'s static questions on its socket before NATS can be reached', async () => {
    const activate = await waitFor(() => (fs.existsSync(socketPath) ? pluginPost(socketPath, '/Plugin.Activate', '{}') : undefined), {
      timeoutMs: 60_000,
      what: 'the agent\'s plugin socket to answer /Plugin.Activate while NATS cannot be reached',
      proc: agent,
    });
    expect(activate).toEqual({ Implements: expect.arrayContaining(['NetworkDriver', 'IpamDriver', 'authz']) });
    expect(await pluginPost(socketPath, '/NetworkDriver.GetCapabilities', '{}')).toEqual({ Scope: 'local', ConnectivityScope: 'global' });
    expect(await pluginPost(socketPath, '/IpamDriver.GetDefaultAddressSpaces', '{}')).toEqual(expect.objectContaining({ LocalDefaultAddressSpace: expect.any(String) }));
    expect(await pluginPost(socketPath, '/AuthZPlugin.AuthZReq', JSON.stringify({ RequestMethod: 'GET', RequestUri: '/v1.41/containers/json' }))).toEqual({ Allow: true });
    expect(agent.exitInfo()).toBeUndefined();
  });

  it('fails a call that waits longer than --startup-wait-ms, saying what the agent waits for', async () => {
    const answer = await pluginPost(socketPath, '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'underlay', Pool: '198.51.100.0/28', Options: {}, V6: false }));
    expect(answer).toEqual({ Error: `underlay agent on h1 is still starting (connecting to NATS at ${natsUrl}) after 8 s; RequestPool was not done, try again` });
  });

  it('serves a call made while it waits once NATS can be reached, and then every call', async () => {
    const pending = pluginPost(socketPath, '/NetworkDriver.CreateNetwork', '{}').catch((e: unknown) => e);
    relay.open();
    // The call made before NATS could be reached went through start-up's gate to the driver (which refuses an empty body).
    expect(await pending).toEqual({ Err: expect.stringMatching(/^invalid request/) });
    const pool = (await pluginPost(socketPath, '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'underlay', Pool: '198.51.100.0/28', Options: {}, V6: false }))) as { PoolID?: string; Pool?: string; Error?: string };
    expect(pool.Error).toBeUndefined();
    expect(pool.Pool).toBe('198.51.100.0/28');
  });
});
