/**
 * The agent's start-up rebuild (services/node-agent/src/driver/store-rebuild.ts) on the in-memory fakes: when
 * Docker cannot be read it starts anyway and tries again in the background with the shared backoff (1 s first),
 * rebuilds once Docker answers, and stops promptly.
 */
import { StoreRebuild } from '../../services/node-agent/src/driver/store-rebuild';
import { fakeDriver } from './driver-fakes';

const NET = 'a1'.repeat(32);
const EP = 'e1'.repeat(32);
const lan = {
  Id: NET,
  Name: 'lan',
  Driver: 'underlay',
  Options: { parent: 'eth1' },
  IPAM: { Driver: 'underlay', Config: [{ Subnet: '192.0.2.0/24', Gateway: '192.0.2.1' }] },
  Containers: { c1: { Name: 'web', EndpointID: EP, IPv4Address: '192.0.2.2/24', MacAddress: '02:42:c0:00:02:02' } },
};

let f: ReturnType<typeof fakeDriver>;
beforeEach(() => {
  f = fakeDriver({ docker: [lan] });
});
afterEach(() => f.cleanup());

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  expect(cond()).toBe(true);
}

describe('StoreRebuild', () => {
  it('rebuilds from Docker before returning when Docker answers', async () => {
    const rb = new StoreRebuild(f.ctx);
    await rb.start();
    expect(f.ctx.store.networks.get(NET)).toMatchObject({ parent: 'eth1', poolIds: ['underlay/192.0.2.0/24'] });
    expect(f.ctx.store.endpoints.get(EP)).toMatchObject({ address: '192.0.2.2/24', srcName: `ul${EP.slice(0, 11)}` });
    expect(f.logs).toEqual(['rebuilt from Docker: 1 networks (lan) and 1 endpoints (web 192.0.2.2/24)']);
    await rb.stop();
  });

  it('starts without Docker, tries again after about a second, and rebuilds once Docker answers', async () => {
    f.docker.down = true;
    const rb = new StoreRebuild(f.ctx);
    const t0 = Date.now();
    await rb.start();
    expect(f.ctx.store.networks.size).toBe(0);
    expect(f.logs).toEqual([
      "rebuild from Docker: Docker's networks could not be listed: connect ENOENT /var/run/docker.sock",
      'Docker could not be read: the agent starts with what its state files hold and tries again',
    ]);
    const listed = () => f.docker.calls.filter((c) => c.method === 'listNetworks').length;
    expect(listed()).toBe(1);
    await until(() => listed() === 2, 2_000);
    // The first wait is the backoff's minimum (1 s, less at most 20 % jitter).
    expect(Date.now() - t0).toBeGreaterThanOrEqual(780);
    f.docker.down = false;
    await until(() => f.ctx.store.networks.has(NET), 4_000);
    expect(f.logs.at(-1)).toBe('rebuilt from Docker: 1 networks (lan) and 1 endpoints (web 192.0.2.2/24)');
    await rb.stop();
  });

  it('stops at once while waiting, and reads Docker no more', async () => {
    f.docker.down = true;
    const rb = new StoreRebuild(f.ctx);
    await rb.start();
    const n = f.docker.calls.length;
    const t0 = Date.now();
    await rb.stop();
    expect(Date.now() - t0).toBeLessThan(200);
    await new Promise((r) => setTimeout(r, 1_200));
    expect(f.docker.calls).toHaveLength(n);
  });
});
