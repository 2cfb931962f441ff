/**
 * A node is registered once: reports whose interface lists differ only by what comes and goes with containers
 * and networks (Docker's veths and bridges, underlay's `ul<11 hex>` endpoint links and dummy parents) add no
 * NodeRegistered; a new possible parent, a new address or version does.
 */
import { decideNodeHello, isTransientInterface, parentInterfaces } from '@underlay/core';
import { engineWithLog } from './support';

const hex = (n: number, len: number) => n.toString(16).padStart(len, '0').slice(-len);

describe('node registration', () => {
  it('registers a node once while container veths, bridges and endpoint links come and go', () => {
    const { run, log, engine } = engineWithLog();
    const base = ['lo', 'eth0', 'eth1', 'eth1.20', 'docker0'];
    for (let i = 0; i < 200; i++) {
      // Each report sees another set of containers: i veths, endpoint links, and some bridges and dummies.
      const churn = [
        ...Array.from({ length: i % 7 }, (_, k) => `veth${hex(i * 31 + k, 7)}`),
        ...Array.from({ length: i % 5 }, (_, k) => `ul${hex(i * 17 + k, 11)}`),
        ...(i % 3 === 0 ? [`br-${hex(i, 12)}`, 'docker_gwbridge'] : []),
        ...(i % 4 === 0 ? [`dm-${hex(i, 12)}`, `di-${hex(i + 1, 12)}`] : []),
      ];
      const interfaces = i % 2 ? [...churn, ...base] : [...base, ...churn];
      run((s) => decideNodeHello(s, { node: 'h1', address: '203.0.113.1', version: '0.1.0', interfaces }), 'node:h1');
    }
    const registered = log.filter((e) => e.type === 'NodeRegistered');
    expect(registered).toHaveLength(1);
    // The registration carries the interfaces that can be parents; the full list is status, not an event.
    expect(registered[0]!.data).toEqual({ node: 'h1', address: '203.0.113.1', version: '0.1.0', interfaces: ['eth0', 'eth1', 'eth1.20'] });
    expect(engine.state.nodes.get('h1')!.interfaces).toEqual(['eth0', 'eth1', 'eth1.20']);
  });

  it('registers again when a possible parent, the address or the version changes', () => {
    const { run, log } = engineWithLog();
    const hello = (interfaces: string[], address = '203.0.113.1', version = '0.1.0') =>
      run((s) => decideNodeHello(s, { node: 'h1', address, version, interfaces }), 'node:h1');
    hello(['eth0', 'veth1234567']);
    hello(['eth0', 'vethabcdef0', 'ul0123456789a']);
    hello(['eth0', 'eth2']); // a NIC was added: it can be a parent
    hello(['eth0', 'eth2', 'veth0000001']);
    hello(['eth0', 'eth2'], '203.0.113.9');
    hello(['eth0', 'eth2'], '203.0.113.9', '0.2.0');
    expect(log.filter((e) => e.type === 'NodeRegistered').map((e) => (e.data as { interfaces?: string[] }).interfaces)).toEqual([
      ['eth0'],
      ['eth0', 'eth2'],
      ['eth0', 'eth2'],
      ['eth0', 'eth2'],
    ]);
  });

  it('does not re-register a node whose earlier registration listed transient interfaces', () => {
    const { run, log, engine } = engineWithLog();
    // As written before this rule: the registration holds every interface name.
    engine.execute(() => ({ events: [{ type: 'NodeRegistered', data: { node: 'h1', address: '203.0.113.1', version: '0.1.0', interfaces: ['eth0', 'veth1111111'] } }], result: {} }), { actor: 'node:h1' });
    run((s) => decideNodeHello(s, { node: 'h1', address: '203.0.113.1', version: '0.1.0', interfaces: ['eth0', 'veth2222222'] }), 'node:h1');
    expect(log).toEqual([]);
  });

  it('tells possible parents from transient names', () => {
    for (const n of ['veth1a2b3c4', 'ul0123456789a', 'docker0', 'docker_gwbridge', 'br-0123456789ab', 'dm-0123456789ab', 'di-0123456789ab', 'lo']) {
      expect(isTransientInterface(n)).toBe(true);
    }
    for (const n of ['eth0', 'ens3', 'eth1.20', 'bond0', 'br0', 'ul0123', 'ulxyz']) expect(isTransientInterface(n)).toBe(false);
    expect(parentInterfaces(['eth1', 'eth0', 'eth1', 'veth1234567'])).toEqual(['eth0', 'eth1']);
  });
});
