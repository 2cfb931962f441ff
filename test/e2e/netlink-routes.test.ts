/**
 * netlink route ops (libs/adapters/src/netlink/routes.ts, route-encode.ts, route-decode.ts).
 *
 * Part 1 (no kernel): the request bytes equal iproute2's.
 * Part 2 (real kernel, root): RouteOps inside a private network namespace created for this run, compared
 *   with `ip route`. A netlink socket acts on the namespace of the process that opened it, so the RouteOps
 *   runs in a child started with `nsenter --net=/run/netns/<ns> node <tmp>/child.js`, where <tmp> holds the
 *   netlink module transpiled in beforeAll (no dependency on a build). The devices are veth and macvlan
 *   (the host kernel has both). Nothing is done in the root namespace but `ip netns add/del` of our own
 *   namespace.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';

import ts from 'typescript';

import {
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  buildNlmsg,
} from '../../libs/adapters/src/netlink/encode.js';
import { decodeRouteMessage } from '../../libs/adapters/src/netlink/route-decode.js';
import {
  NLM_F_REPLACE,
  RTM_DELROUTE,
  RTM_NEWROUTE,
  addrBytes,
  buildRouteBody,
  formatAddrBytes,
  parseRouteDst,
} from '../../libs/adapters/src/netlink/route-encode.js';
import type { KernelRoute } from '../../libs/adapters/src/netlink/index.js';
import { rejectionOf } from './support/netns';
import { UnderlayError } from '@underlay/core';

const REPO = path.resolve(__dirname, '../..');
const MODULE_SRC = path.join(REPO, 'libs/adapters/src/netlink');
const PROTO = 201;

// ------------------------------------------------------------------------------------------------
// Part 1: request bytes vs. iproute2
// ------------------------------------------------------------------------------------------------

/*
 * Datagrams sent by iproute2-6.1.0 (Debian 12), captured in a namespace where vp0 has ifindex 3 with
 *   ip netns exec cap strace -e trace=sendmsg -e write=3 -s 0 ip <ARGS>
 * nlmsg_seq (bytes 8..11) is per run; the test re-uses the captured one (0x6b045700).
 */
const SEQ = 0x6b045700;
const IPROUTE2: Array<{ args: string; hex: string; type: number; flags: number; dst: string; via: string; del?: boolean }> = [
  {
    args: 'route add 192.0.2.16/28 via 198.51.100.2 dev vp0 proto 201',
    hex: '34000000180005060057046b00000000021c0000fec900010000000008000100c000021008000500c63364020800040003000000',
    type: RTM_NEWROUTE,
    flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
    dst: '192.0.2.16/28',
    via: '198.51.100.2',
  },
  {
    args: 'route replace 192.0.2.32/28 via 198.51.100.3 dev vp0 proto 201',
    hex: '34000000180005050057046b00000000021c0000fec900010000000008000100c000022008000500c63364030800040003000000',
    type: RTM_NEWROUTE,
    flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    dst: '192.0.2.32/28',
    via: '198.51.100.3',
  },
  {
    args: 'route del 192.0.2.16/28 via 198.51.100.2 dev vp0 proto 201',
    hex: '34000000190005000057046b00000000021c0000fec9ff000000000008000100c000021008000500c63364020800040003000000',
    type: RTM_DELROUTE,
    flags: NLM_F_REQUEST | NLM_F_ACK,
    dst: '192.0.2.16/28',
    via: '198.51.100.2',
    del: true,
  },
  {
    args: '-6 route add 2001:db8:1::10/124 via 2001:db8:ffff::2 dev vp0 proto 201',
    hex: '4c000000180005060057046b000000000a7c0000fec90001000000001400010020010db80001000000000000000000101400050020010db8ffff000000000000000000020800040003000000',
    type: RTM_NEWROUTE,
    flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
    dst: '2001:db8:1::10/124',
    via: '2001:db8:ffff::2',
  },
  {
    args: '-6 route del 2001:db8:1::10/124 via 2001:db8:ffff::2 dev vp0 proto 201',
    hex: '4c000000190005000057046b000000000a7c0000fec90000000000001400010020010db80001000000000000000000101400050020010db8ffff000000000000000000020800040003000000',
    type: RTM_DELROUTE,
    flags: NLM_F_REQUEST | NLM_F_ACK,
    dst: '2001:db8:1::10/124',
    via: '2001:db8:ffff::2',
    del: true,
  },
  {
    args: 'route add 192.0.2.9/32 via 198.51.100.2 dev vp0 proto 201',
    hex: '34000000180005060057046b0000000002200000fec900010000000008000100c000020908000500c63364020800040003000000',
    type: RTM_NEWROUTE,
    flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
    dst: '192.0.2.9/32',
    via: '198.51.100.2',
  },
];

describe('route encoders match iproute2 byte for byte (no kernel needed)', () => {
  it.each(IPROUTE2.map((c) => [c.args, c] as const))('ip %s', (_args, c) => {
    const dst = parseRouteDst('test', c.dst);
    const body = buildRouteBody({ family: dst.family, dstLen: dst.prefix, dst: dst.bytes, gateway: addrBytes('test', c.via).bytes, oif: 3, protocol: PROTO, forDelete: c.del });
    expect(buildNlmsg({ type: c.type, flags: c.flags, seq: SEQ, body }).toString('hex')).toBe(c.hex);
    // The decoder reads the same message back.
    const r = decodeRouteMessage(Buffer.from(c.hex, 'hex').subarray(16));
    expect(r).toMatchObject({ dst: c.dst, gateway: c.via, oif: 3, protocol: PROTO, table: 254 });
  });

  it('parses and formats addresses like iproute2 prints them', () => {
    for (const a of ['192.0.2.1', '2001:db8::1', '::', '2001:db8:1:2:3:4:5:6', '::ffff:192.0.2.1', '2001:db8::', 'fe80::1:0:0:1']) {
      const b = addrBytes('t', a).bytes;
      const back = formatAddrBytes(b);
      expect(addrBytes('t', back).bytes.equals(b)).toBe(true);
    }
    expect(formatAddrBytes(addrBytes('t', '2001:DB8:0:0:1::1').bytes)).toBe('2001:db8::1:0:0:1');
    expect(formatAddrBytes(addrBytes('t', '::ffff:192.0.2.1').bytes)).toBe('::ffff:192.0.2.1');
    expect(() => parseRouteDst('t', '192.0.2.17/28')).toThrow(/host bits/);
    expect(() => parseRouteDst('t', '192.0.2.0/33')).toThrow(/prefix/);
    expect(() => addrBytes('t', 'nope')).toThrow(/not an IP address/);
  });
});

// ------------------------------------------------------------------------------------------------
// Part 2: real kernel
// ------------------------------------------------------------------------------------------------

const CHILD = `'use strict';
const readline = require('readline');
const mod = require(require('path').join(process.argv[2], 'index.js'));
const ops = mod.openRouteOps();
process.stdout.write(JSON.stringify({ ready: true, pid: process.pid }) + '\\n');
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const req = JSON.parse(line);
  try {
    const v = await ops[req.method](...(req.args || []));
    process.stdout.write(JSON.stringify({ id: req.id, ok: true, value: v === undefined ? null : v }) + '\\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ id: req.id, ok: false, error: { name: e.name, message: e.message, errno: e.errno } }) + '\\n');
  }
}).on('close', () => { ops.close(); process.exit(0); });
`;

/** An error thrown inside the namespace child, with its errno and name. */
class RemoteError extends UnderlayError {
  constructor(
    message: string,
    readonly errno?: string,
    readonly remoteName?: string,
  ) {
    super(remoteName === 'NetlinkError' ? 'netlink' : 'internal', message, { retriable: false });
    this.name = 'RemoteError';
  }
}

class Child {
  private next = 1;
  private readonly waiters = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private stderr = '';
  pid = 0;
  private constructor(private readonly proc: ChildProcessWithoutNullStreams) {}

  static start(ns: string, dir: string): Promise<Child> {
    const proc = spawn('nsenter', [`--net=/run/netns/${ns}`, process.execPath, path.join(dir, 'child.js'), dir], {
      env: { ...process.env, NODE_PATH: path.join(REPO, 'node_modules') },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const c = new Child(proc);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child did not start: ${c.stderr}`)), 10_000);
      proc.stderr.on('data', (d: Buffer) => (c.stderr += d.toString()));
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`child exited ${code}: ${c.stderr}`));
        for (const w of c.waiters.values()) w.reject(new Error(`child exited ${code}: ${c.stderr}`));
      });
      readline.createInterface({ input: proc.stdout }).on('line', (line) => {
        const m = JSON.parse(line) as { ready?: boolean; pid?: number; id?: number; ok?: boolean; value?: unknown; error?: { message: string; errno?: string; name?: string } };
        if (m.ready) {
          c.pid = m.pid!;
          clearTimeout(timer);
          resolve(c);
          return;
        }
        const w = c.waiters.get(m.id!);
        if (!w) return;
        c.waiters.delete(m.id!);
        if (m.ok) w.resolve(m.value);
        else w.reject(new RemoteError(m.error!.message, m.error!.errno, m.error!.name));
      });
    });
  }

  call<T>(method: string, ...args: unknown[]): Promise<T> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiters.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.stdin.write(JSON.stringify({ id, method, args }) + '\n');
    });
  }

  async stop(): Promise<void> {
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(t);
  }
}

function transpile(outDir: string): void {
  for (const f of fs.readdirSync(MODULE_SRC).filter((x) => x.endsWith('.ts'))) {
    const res = ts.transpileModule(fs.readFileSync(path.join(MODULE_SRC, f), 'utf8'), {
      fileName: f,
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, isolatedModules: true },
    });
    fs.writeFileSync(path.join(outDir, f.replace(/\.ts$/, '.js')), res.outputText);
  }
  fs.writeFileSync(path.join(outDir, 'child.js'), CHILD);
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  metric?: number;
}

describe('RouteOps on the real kernel, in a private network namespace (needs root)', () => {
  const ns = `ul-rt-e2e-${process.pid}-${randomBytes(3).toString('hex')}`;
  let dir: string | undefined;
  let nsCreated = false;
  let child: Child | undefined;
  const ip = (...args: string[]): string => execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  /** `ip -j route show` of both families (or the dst's), as {dst,gateway,dev,protocol} with the dst as a CIDR. */
  const ipRoutes = (f: { proto?: string; dst?: string } = {}): IpRoute[] => {
    const out: IpRoute[] = [];
    const fams = f.dst ? [f.dst.includes(':') ? '-6' : '-4'] : ['-4', '-6'];
    for (const fam of fams) {
      const filter = [...(f.proto ? ['proto', f.proto] : []), ...(f.dst ? [f.dst] : [])];
      for (const r of JSON.parse(ip(fam, '-j', 'route', 'show', 'table', 'main', ...filter)) as IpRoute[]) {
        const dst = r.dst === 'default' ? (fam === '-4' ? '0.0.0.0/0' : '::/0') : r.dst.includes('/') ? r.dst : `${r.dst}/${fam === '-4' ? 32 : 128}`;
        // With a proto filter iproute2 leaves the protocol out of its output.
        out.push({ dst, ...(r.gateway ? { gateway: r.gateway } : {}), ...(r.dev ? { dev: r.dev } : {}), protocol: r.protocol ?? f.proto });
      }
    }
    return out;
  };
  const c = (): Child => {
    if (!child) throw new Error('setup failed (see beforeAll); nothing was tested');
    return child;
  };
  const list = (protocol?: number) => c().call<KernelRoute[]>('listRoutes', protocol === undefined ? {} : { protocol });
  const rejects = async (p: Promise<unknown>, errno: string, msg?: RegExp) => {
    const err = await rejectionOf(p);
    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).remoteName).toBe('NetlinkError');
    expect((err as RemoteError).errno).toBe(errno);
    if (msg) expect((err as Error).message).toMatch(msg);
  };

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('netlink route e2e tests must run as root (ip netns, nsenter)');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-nlroutes-'));
    transpile(dir);
    execFileSync('ip', ['netns', 'add', ns]);
    nsCreated = true;
    ip('link', 'add', 'vp0', 'type', 'veth', 'peer', 'name', 'vp1');
    ip('link', 'add', 'mv0', 'link', 'vp1', 'type', 'macvlan', 'mode', 'bridge');
    for (const l of ['vp0', 'vp1', 'mv0']) ip('link', 'set', l, 'up');
    ip('addr', 'add', '198.51.100.1/24', 'dev', 'vp0');
    ip('addr', 'add', '203.0.113.1/24', 'dev', 'mv0');
    ip('-6', 'addr', 'add', '2001:db8:ffff::1/64', 'dev', 'vp0', 'nodad');
    child = await Child.start(ns, dir);
    // Safety: the child must be in OUR namespace before it changes anything.
    const want = `net:[${fs.statSync(`/run/netns/${ns}`).ino}]`;
    const have = fs.readlinkSync(`/proc/${child.pid}/ns/net`);
    if (have !== want) {
      await child.stop();
      child = undefined;
      throw new Error(`child runs in ${have}, expected ${want}; refusing to continue`);
    }
  }, 30_000);

  afterAll(async () => {
    await child?.stop().catch(() => undefined);
    if (nsCreated) execFileSync('ip', ['netns', 'del', ns]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists the main table like `ip route` (kernel routes included; none with protocol 201 yet)', async () => {
    const all = await list();
    const mine = all.map((r) => ({ dst: r.dst, ...(r.via ? { gateway: r.via } : {}), ...(r.dev ? { dev: r.dev } : {}) }));
    const theirs = ipRoutes().map(({ protocol: _p, ...r }) => r);
    expect(new Set(mine.map((x) => JSON.stringify(x)))).toEqual(new Set(theirs.map((x) => JSON.stringify(x))));
    expect(all.some((r) => r.dst === '198.51.100.0/24' && r.protocol === 2 && r.dev === 'vp0')).toBe(true);
    expect(await list(PROTO)).toEqual([]);
  });

  it('adds IPv4 block, host and IPv6 routes with protocol 201 on veth and macvlan devices', async () => {
    await c().call('addRoute', { dst: '192.0.2.16/28', via: '198.51.100.2', dev: 'vp0', protocol: PROTO });
    await c().call('addRoute', { dst: '192.0.2.9/32', via: '198.51.100.3', dev: 'vp0', protocol: PROTO });
    await c().call('addRoute', { dst: '192.0.2.32/28', via: '203.0.113.2', dev: 'mv0', protocol: PROTO });
    await c().call('addRoute', { dst: '2001:db8:1::10/124', via: '2001:db8:ffff::2', dev: 'vp0', protocol: PROTO });
    expect(ipRoutes({ proto: String(PROTO) })).toEqual([
      { dst: '192.0.2.9/32', gateway: '198.51.100.3', dev: 'vp0', protocol: String(PROTO) },
      { dst: '192.0.2.16/28', gateway: '198.51.100.2', dev: 'vp0', protocol: String(PROTO) },
      { dst: '192.0.2.32/28', gateway: '203.0.113.2', dev: 'mv0', protocol: String(PROTO) },
      { dst: '2001:db8:1::10/124', gateway: '2001:db8:ffff::2', dev: 'vp0', protocol: String(PROTO) },
    ]);
    const mine = await list(PROTO);
    expect(mine.map((r) => `${r.dst} via ${r.via} dev ${r.dev} proto ${r.protocol}`).sort()).toEqual(
      [
        '192.0.2.16/28 via 198.51.100.2 dev vp0 proto 201',
        '192.0.2.9/32 via 198.51.100.3 dev vp0 proto 201',
        '192.0.2.32/28 via 203.0.113.2 dev mv0 proto 201',
        '2001:db8:1::10/124 via 2001:db8:ffff::2 dev vp0 proto 201',
      ].sort(),
    );
    expect(mine.every((r) => r.scope === 0)).toBe(true);
  });

  it('sees routes added by `ip route … proto 201` and deletes them; delete is idempotent', async () => {
    ip('route', 'add', '192.0.2.48/28', 'via', '198.51.100.4', 'dev', 'vp0', 'proto', String(PROTO));
    expect((await list(PROTO)).some((r) => r.dst === '192.0.2.48/28' && r.via === '198.51.100.4')).toBe(true);
    expect(await c().call('deleteRoute', { dst: '192.0.2.48/28', protocol: PROTO, via: '198.51.100.4', dev: 'vp0' })).toBe(true);
    expect(await c().call('deleteRoute', { dst: '192.0.2.48/28', protocol: PROTO })).toBe(false);
    expect(ip('route', 'show', '192.0.2.48/28')).toBe('');
  });

  it('never touches a route with another protocol: add refuses (EEXIST), delete with 201 finds nothing', async () => {
    ip('route', 'add', '192.0.2.64/28', 'via', '198.51.100.9', 'dev', 'vp0', 'proto', 'static');
    ip('-6', 'route', 'add', '2001:db8:1::40/124', 'via', '2001:db8:ffff::9', 'dev', 'vp0', 'proto', 'static');
    await rejects(c().call('addRoute', { dst: '192.0.2.64/28', via: '198.51.100.2', dev: 'vp0', protocol: PROTO }), 'EEXIST', /already exists/);
    await rejects(c().call('addRoute', { dst: '2001:db8:1::40/124', via: '2001:db8:ffff::2', dev: 'vp0', protocol: PROTO }), 'EEXIST');
    expect(await c().call('deleteRoute', { dst: '192.0.2.64/28', protocol: PROTO })).toBe(false);
    expect(await c().call('deleteRoute', { dst: '2001:db8:1::40/124', protocol: PROTO })).toBe(false);
    expect(ipRoutes({ proto: 'static' })).toEqual([
      { dst: '192.0.2.64/28', gateway: '198.51.100.9', dev: 'vp0', protocol: 'static' },
      { dst: '2001:db8:1::40/124', gateway: '2001:db8:ffff::9', dev: 'vp0', protocol: 'static' },
    ]);
    expect((await list(PROTO)).some((r) => r.dst === '192.0.2.64/28' || r.dst === '2001:db8:1::40/124')).toBe(false);
    expect((await list(4)).map((r) => r.dst).sort()).toEqual(['192.0.2.64/28', '2001:db8:1::40/124']);
  });

  it('replaceRoute changes the next hop in place', async () => {
    await c().call('replaceRoute', { dst: '192.0.2.16/28', via: '198.51.100.5', dev: 'vp0', protocol: PROTO });
    expect(ipRoutes({ dst: '192.0.2.16/28' })).toEqual([{ dst: '192.0.2.16/28', gateway: '198.51.100.5', dev: 'vp0', protocol: String(PROTO) }]);
  });

  it('deletes by protocol, next hop and device: a wrong next hop deletes nothing', async () => {
    expect(await c().call('deleteRoute', { dst: '192.0.2.16/28', protocol: PROTO, via: '198.51.100.99', dev: 'vp0' })).toBe(false);
    expect(await c().call('deleteRoute', { dst: '192.0.2.16/28', protocol: PROTO, via: '198.51.100.5', dev: 'vp0' })).toBe(true);
    expect(await c().call('deleteRoute', { dst: '2001:db8:1::10/124', protocol: PROTO, via: '2001:db8:ffff::2', dev: 'vp0' })).toBe(true);
    expect(ipRoutes({ proto: String(PROTO) }).map((r) => r.dst)).toEqual(['192.0.2.9/32', '192.0.2.32/28']);
    // Deleting through a device that does not exist finds nothing.
    expect(await c().call('deleteRoute', { dst: '192.0.2.9/32', protocol: PROTO, dev: 'nope0' })).toBe(false);
  });

  it('explains errors: missing device, unreachable next hop, bad arguments', async () => {
    await rejects(c().call('addRoute', { dst: '192.0.2.80/28', via: '198.51.100.2', dev: 'nope0', protocol: PROTO }), 'ENODEV', /interface nope0 not found/);
    await rejects(c().call('addRoute', { dst: '192.0.2.80/28', via: '192.0.2.200', dev: 'vp0', protocol: PROTO }), 'ENETUNREACH', /not reachable through vp0/);
    await rejects(c().call('addRoute', { dst: '192.0.2.81/28', via: '198.51.100.2', dev: 'vp0', protocol: PROTO }), 'EINVAL', /host bits/);
    await rejects(c().call('addRoute', { dst: '192.0.2.80/28', via: '2001:db8:ffff::2', dev: 'vp0', protocol: PROTO }), 'EINVAL', /family/);
    await rejects(c().call('addRoute', { dst: '192.0.2.80/28', via: '198.51.100.2', dev: 'vp0', protocol: 0 }), 'EINVAL', /protocol/);
    expect(ip('route', 'show', '192.0.2.80/28')).toBe('');
  });

  it('finds a device re-created under a new index', async () => {
    ip('link', 'del', 'mv0'); // the kernel drops its routes
    expect((await list(PROTO)).some((r) => r.dev === 'mv0')).toBe(false);
    await c().call('deleteRoute', { dst: '192.0.2.9/32', protocol: PROTO }); // (cache the old index first)
    ip('link', 'add', 'mv0', 'link', 'vp1', 'type', 'macvlan', 'mode', 'bridge');
    ip('link', 'set', 'mv0', 'up');
    ip('addr', 'add', '203.0.113.1/24', 'dev', 'mv0');
    await c().call('addRoute', { dst: '192.0.2.32/28', via: '203.0.113.2', dev: 'mv0', protocol: PROTO });
    expect(ipRoutes({ proto: String(PROTO) })).toEqual([{ dst: '192.0.2.32/28', gateway: '203.0.113.2', dev: 'mv0', protocol: String(PROTO) }]);
  });
});
