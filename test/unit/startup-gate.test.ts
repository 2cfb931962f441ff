/**
 * The agent's start-up gate (services/node-agent/src/startup-gate.ts): static answers at once, state calls wait for
 * start-up and then go to the real routes, a wait that runs out names what the agent is doing, a failed start-up is
 * named to every caller. Real timers with short waits.
 */
import { UnderlayError } from '@underlay/core';
import { StartupGate } from '../../services/node-agent/src/startup-gate';
import { PLUGIN_METHODS, STATEFUL_METHODS, staticRoutes } from '../../services/node-agent/src/agent';

const METHODS = ['/Plugin.Activate', '/IpamDriver.RequestPool', '/AuthZPlugin.AuthZReq'];

function gate(waitMs = 2_000): StartupGate {
  return new StartupGate({
    node: 'h1',
    waitMs,
    immediate: { '/Plugin.Activate': () => ({ Implements: ['NetworkDriver'] }) },
    early: { '/AuthZPlugin.AuthZReq': (b) => ((b as { RequestMethod?: string }).RequestMethod === 'DELETE' ? undefined : { Allow: true }) },
  });
}

describe('StartupGate', () => {
  it('answers static calls before start-up and holds state calls until it is done', async () => {
    const g = gate();
    const t = g.table(METHODS);
    expect(t['/Plugin.Activate']!({})).toEqual({ Implements: ['NetworkDriver'] });
    let answered = false;
    const pool = Promise.resolve(t['/IpamDriver.RequestPool']!({ Pool: '198.51.100.0/28' })).then((v) => ((answered = true), v));
    await new Promise((r) => setTimeout(r, 50));
    expect(answered).toBe(false);
    expect(g.isOpen).toBe(false);
    g.open({ '/IpamDriver.RequestPool': (b) => ({ PoolID: `pool of ${(b as { Pool: string }).Pool}` }) });
    await expect(pool).resolves.toEqual({ PoolID: 'pool of 198.51.100.0/28' });
    // After start-up calls go straight through.
    await expect(t['/IpamDriver.RequestPool']!({ Pool: '203.0.113.0/28' })).resolves.toEqual({ PoolID: 'pool of 203.0.113.0/28' });
  });

  it('gives early answers where it can (the authorization hook allows all but a network removal) and waits for the rest', async () => {
    const g = gate(100);
    const t = g.table(METHODS);
    await expect(t['/AuthZPlugin.AuthZReq']!({ RequestMethod: 'GET', RequestUri: '/v1.41/containers/json' })).resolves.toEqual({ Allow: true });
    await expect(t['/AuthZPlugin.AuthZReq']!({ RequestMethod: 'DELETE', RequestUri: '/v1.41/networks/n1' })).rejects.toThrow(/still starting/);
  });

  it('fails a call that waited too long, naming the stage start-up is in, as a retriable unavailable error', async () => {
    const g = gate(150);
    g.stage('connecting to NATS at nats://198.51.100.254:4222');
    const e = await Promise.resolve(g.table(METHODS)['/IpamDriver.RequestPool']!({})).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnderlayError);
    expect((e as UnderlayError).code).toBe('unavailable');
    expect((e as Error).message).toBe('underlay agent on h1 is still starting (connecting to NATS at nats://198.51.100.254:4222) after 0 s; RequestPool was not done, try again');
  });

  it('tells waiting and later callers why start-up failed', async () => {
    const g = gate();
    const t = g.table(METHODS);
    const waiting = Promise.resolve(t['/IpamDriver.RequestPool']!({})).catch((x: unknown) => x);
    g.fail(new Error('cannot read the NATS creds file /etc/underlay/nats/node.creds: ENOENT'));
    expect(((await waiting) as Error).message).toBe('underlay agent on h1 failed to start: cannot read the NATS creds file /etc/underlay/nats/node.creds: ENOENT');
    await expect(Promise.resolve(t['/IpamDriver.RequestPool']!({}))).rejects.toThrow(/failed to start/);
  });

  it('serves every plugin method: the static ones at once and the rest behind the gate, none twice', () => {
    const statics = Object.keys(staticRoutes());
    expect(new Set(PLUGIN_METHODS).size).toBe(PLUGIN_METHODS.length);
    expect(statics.filter((m) => (STATEFUL_METHODS as readonly string[]).includes(m))).toEqual([]);
    expect(PLUGIN_METHODS).toEqual(expect.arrayContaining(['/Plugin.Activate', '/NetworkDriver.Join', '/IpamDriver.RequestAddress', '/AuthZPlugin.AuthZReq']));
  });
});
