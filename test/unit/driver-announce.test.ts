/**
 * The neighbour announcement after Join (services/node-agent/src/driver/announce.ts) on a fake `nsenter` and a fake
 * namespace check: what it runs and in which order, what it waits for, and how it ends (sent, gone, timeout, error,
 * unavailable). The kernel's side (a peer's cache updated within a second) is tested end to end in
 * test/e2e/neighbour-announce.test.ts.
 */
import { Announcer, notifySysctls, readyLink, validSandboxKey, type AnnounceResult, type AnnounceTarget, type Exec } from '../../services/node-agent/src/driver/announce';

const KEY = '/var/run/docker/netns/0123abcd';
const MAC = '02:00:00:15:00:02';
const T: AnnounceTarget = { endpointId: 'e'.repeat(64), sandboxKey: KEY, mac: MAC, address: '198.51.100.200', addressV6: '2001:db8:15::200' };

function link(o: { up?: boolean; v6tentative?: boolean; mac?: string; v4?: string } = {}) {
  return {
    ifname: 'eth0',
    flags: o.up === false ? ['BROADCAST'] : ['BROADCAST', 'UP', 'LOWER_UP'],
    address: o.mac ?? MAC,
    addr_info: [
      { family: 'inet', local: o.v4 ?? '198.51.100.200', prefixlen: 24 },
      { family: 'inet6', local: '2001:db8:15::200', prefixlen: 64, ...(o.v6tentative ? { tentative: true } : {}) },
    ],
  };
}

/** A fake nsenter: answers `ip -j addr show` with the next of `states` (the last one repeats), records every call. */
function fakeNs(states: unknown[][], o: { fail?: RegExp; missing?: boolean } = {}) {
  const calls: string[][] = [];
  let i = 0;
  const exec: Exec = async (file, args) => {
    calls.push([file, ...args]);
    if (o.missing) return { code: null, stdout: '', stderr: 'spawn nsenter ENOENT', missing: true };
    if (o.fail?.test(args.join(' '))) return { code: 1, stdout: '', stderr: 'RTNETLINK answers: Operation not permitted' };
    if (args.includes('-j')) return { code: 0, stdout: JSON.stringify(states[Math.min(i++, states.length - 1)]), stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  };
  return { calls, exec };
}

function announcer(exec: Exec, o: { ns?: () => boolean; deadlineMs?: number } = {}) {
  const logs: string[] = [];
  const results: AnnounceResult[] = [];
  const a = new Announcer({
    log: { debug: (m) => logs.push(`debug ${m}`), warn: (m) => logs.push(`warn ${m}`) },
    observe: (r) => results.push(r),
    exec,
    isNamespace: async () => (o.ns ? o.ns() : true),
    deadlineMs: o.deadlineMs ?? 2_000,
    intervalMs: 1,
  });
  return { a, logs, results };
}

describe('neighbour announcement: pure parts', () => {
  it('accepts Docker\'s sandbox keys and nothing a shell or a path could misread', () => {
    expect(validSandboxKey(KEY)).toBe(true);
    expect(validSandboxKey('/run/netns/ul1-h1')).toBe(true);
    for (const bad of ['', 'var/run/x', '/var/run/../etc/x', '/x;rm', '/x y', '-n', '/x\n']) expect(validSandboxKey(bad)).toBe(false);
  });

  it('a link is ready when it is up with the MAC and every address (IPv6 also while tentative)', () => {
    expect(readyLink([link()], T)).toEqual({ ifname: 'eth0', mac: MAC });
    expect(readyLink([link({ up: false })], T)).toBeUndefined();
    expect(readyLink([link({ v6tentative: true })], T)).toEqual({ ifname: 'eth0', mac: MAC }); // the kernel announces it after DAD
    expect(readyLink([link({ v4: '198.51.100.201' })], T)).toBeUndefined();
    expect(readyLink([link({ mac: '02:00:00:00:00:01' })], T)).toBeUndefined();
    expect(readyLink([{ ...link(), addr_info: [] }], { ...T, address: undefined })).toBeUndefined();
  });

  it('enables arp_notify and ndisc_notify for the families the endpoint has (slash form: names may hold dots)', () => {
    expect(notifySysctls('eth0', true, false)).toEqual(['net/ipv4/conf/all/arp_notify=1', 'net/ipv4/conf/eth0/arp_notify=1']);
    expect(notifySysctls('eth0.5', true, true)).toEqual([
      'net/ipv4/conf/all/arp_notify=1', 'net/ipv4/conf/eth0.5/arp_notify=1', 'net/ipv6/conf/all/ndisc_notify=1', 'net/ipv6/conf/eth0.5/ndisc_notify=1',
    ]);
  });
});

describe('Announcer', () => {
  it('waits for the link to be ready, then sets the sysctls and re-sets the MAC in the sandbox', async () => {
    const ns = fakeNs([[], [link({ up: false })], [link({ v4: '198.51.100.9' })], [link()]]);
    const { a, results, logs } = announcer(ns.exec);
    expect(await a.announce(T)).toBe('sent');
    const enter = ['nsenter', `--net=${KEY}`, '--'];
    expect(ns.calls.filter((c) => c.includes('-j'))).toHaveLength(4);
    expect(ns.calls.slice(-2)).toEqual([
      [...enter, 'sysctl', '-q', '-w', ...notifySysctls('eth0', true, true)],
      [...enter, 'ip', 'link', 'set', 'dev', 'eth0', 'address', MAC],
    ]);
    expect(results).toEqual(['sent']);
    expect(logs).toEqual([]);
  });

  it('waits for the sandbox key to be a namespace before entering it', async () => {
    let n = 0;
    const ns = fakeNs([[link()]]);
    const { a } = announcer(ns.exec, { ns: () => ++n > 3 });
    expect(await a.announce(T)).toBe('sent');
    expect(ns.calls[0]).toContain('-j');
    expect(n).toBeGreaterThan(3);
  });

  it('refuses a malformed target without running anything', async () => {
    const ns = fakeNs([[link()]]);
    const { a, results, logs } = announcer(ns.exec);
    expect(await a.announce({ ...T, sandboxKey: '/x/../y' })).toBe('error');
    expect(await a.announce({ ...T, mac: '02:00' })).toBe('error');
    expect(await a.announce({ ...T, address: '2001:db8::1' })).toBe('error');
    expect(ns.calls).toEqual([]);
    expect(results).toEqual(['error', 'error', 'error']);
    expect(logs.every((l) => l.startsWith('warn '))).toBe(true);
  });

  it('a container gone before its link was ready is a debug line (Leave cancels; or its namespace went)', async () => {
    const ns = fakeNs([[]]);
    const { a, logs } = announcer(ns.exec);
    const p = a.announce(T);
    a.cancel(T.endpointId);
    expect(await p).toBe('gone');
    let alive = true;
    const gone = announcer(fakeNs([[]]).exec, { ns: () => alive, deadlineMs: 50 });
    const q = gone.a.announce(T);
    alive = false;
    expect(await q).toBe('gone');
    expect([...logs, ...gone.logs].every((l) => l.startsWith('debug '))).toBe(true);
  });

  it('a link that never gets ready times out with a warning naming what it waited for', async () => {
    const { a, logs } = announcer(fakeNs([[link({ up: false })]]).exec, { deadlineMs: 30 });
    expect(await a.announce(T)).toBe('timeout');
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/^warn .*waited 30 ms for the link with MAC 02:00:00:15:00:02 to be up with 198\.51\.100\.200 and 2001:db8:15::200/);
  });

  it('a refused step is an error with the kernel\'s words; no nsenter makes it unavailable, said once', async () => {
    const { a, logs } = announcer(fakeNs([[link()]], { fail: /address/ }).exec);
    expect(await a.announce(T)).toBe('error');
    expect(logs[0]).toMatch(/setting the MAC failed \(exit 1\): RTNETLINK answers: Operation not permitted/);
    const missing = announcer(fakeNs([[link()]], { missing: true }).exec);
    expect(await missing.a.announce(T)).toBe('unavailable');
    expect(await missing.a.announce(T)).toBe('unavailable');
    expect(missing.logs).toEqual(['warn neighbour announcements are off: nsenter is not installed (util-linux)']);
  });
});
