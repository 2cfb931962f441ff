#!/usr/bin/env node
/**
 * Guest-side scenarios for the user-mode-linux link tests (test/e2e/uml-links.test.ts). Runs as root
 * in the root namespace of a UML guest (a separate kernel with ipvlan, 8021q, dummy, macvlan, veth,
 * bridge), builds "hosts" and "containers" as network namespaces, and drives the COMPILED product
 * code through links-check.js, one driver process per host namespace (netlink acts on the netns of
 * its process). Containers are wired the way Docker does after the driver's Join: the endpoint link
 * is moved into the container namespace, renamed eth0, addressed, brought up, routes added.
 *
 *   node test/uml/guest/scenarios.js RESULT_FILE [SCENARIO ...]     (default: all)
 *
 * RESULT_FILE gets JSON, rewritten after every scenario:
 *   { uname, node, totalMs, scenarios: { NAME: { pass, ms, checks: [{ ok, what, detail? }], error?, notes } },
 *     steps: [{ name: 'scenario NAME', code, ms, budget, budgetMs, error? }], budgets, durations }
 * Exit status 0 when every selected scenario passed.
 *
 * Budgets (test/uml/budgets.json, suite uml-links; see test/uml/budget.ts): each scenario, each command and
 * each links-check start or call has one (measured × margin × this machine's factor). A scenario that overruns
 * its budget is recorded as "guest step 'scenario NAME' took longer than N s" and ends the run (its work may
 * still be going on); the longest time of each kind is kept in `durations`.
 */
'use strict';
const { execFile, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const util = require('node:util');

const { guestBudgets } = require('../guest-common');

const DRIVER = path.join(__dirname, 'links-check.js');
/** This run's budgets (guestBudgets), set by main() before any scenario runs. */
let budgets;
/** Longest time per kind: command, links-check start, links-check call, scenario NAME. */
const durations = {};
const longest = (kind, ms) => (durations[kind] = Math.max(durations[kind] || 0, ms));

// ------------------------------------------------------------------------------------------------
// helpers

/** Commands and driver calls that took long (SLOW_MS or more), reported in the scenario's notes. */
const SLOW_MS = 1500;
let slow = [];
const timed = (what, start, kind) => {
  const ms = Date.now() - start;
  if (kind) longest(kind, ms);
  if (ms >= SLOW_MS) slow.push(`slow: ${what} took ${ms} ms`);
};

/** A command, killed after `timeoutMs` (default: the budget of a command); never rejects. */
function run(cmd, args, { timeoutMs, input } = {}) {
  const start = Date.now();
  const limit = timeoutMs ?? budgets.ms('command');
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: limit, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      timed(`${cmd} ${args.join(' ')}`, start, timeoutMs === undefined ? 'command' : undefined);
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), killed: Boolean(err && err.killed) });
    });
    if (input !== undefined) child.stdin.end(input);
  });
}

async function ok(cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.killed ? 'timeout' : `exit ${r.code}`}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

const ip = (...args) => ok('ip', args);
const hex = (n) => crypto.randomBytes(Math.ceil(n / 2)).toString('hex').slice(0, n);
/** A Docker-like network id (64 hex). */
const networkId = () => hex(64);
/** The agent's endpoint link name shape: ul + 11 hex. */
const endpointName = () => `ul${hex(11)}`;

/** ping from a namespace; expectReply: retries up to 3 times, otherwise one short attempt. */
async function ping(ns, dst, expectReply) {
  const attempts = expectReply ? 3 : 1;
  let last;
  for (let i = 1; i <= attempts; i++) {
    last = await run('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', expectReply ? '1' : '2', '-W', expectReply ? '3' : '1', '-w', expectReply ? '4' : '3', dst], { timeoutMs: 10_000 });
    if (last.code === 0) return { replied: true, attempts: i, out: last.stdout.trim() };
  }
  return { replied: false, attempts, out: (last.stdout + last.stderr).trim() };
}

/** The statistics of a link as `ip -s -j` reports them. */
async function linkStats(ns, name) {
  const j = JSON.parse(await ip('-n', ns, '-s', '-j', 'link', 'show', name));
  return j[0].stats64 || j[0].stats;
}

/** One links-check.js process serving requests inside namespace `ns`. */
class Driver {
  constructor(ns) {
    this.ns = ns;
    this.pending = [];
    this.stderr = '';
    this.seq = 0;
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, DRIVER], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (b) => (this.stderr += b));
    this.exited = new Promise((resolve) => this.child.on('close', (code, signal) => resolve({ code, signal })));
    this.exited.then((e) => {
      for (const p of this.pending.splice(0)) p.reject(new Error(`links-check in ${ns} exited (${JSON.stringify(e)}): ${this.stderr.trim()}`));
    });
    const rl = readline.createInterface({ input: this.child.stdout });
    this.ready = new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
    });
    rl.on('line', (line) => {
      const p = this.pending.shift();
      if (!p) return;
      try {
        p.resolve(JSON.parse(line));
      } catch (e) {
        p.reject(new Error(`links-check in ${ns}: bad output ${line}`));
      }
    });
  }

  static async start(ns) {
    const start = Date.now();
    const d = new Driver(ns);
    await withTimeout(d.ready, budgets.ms('links-check start'), `links-check start in ${ns}`).finally(() => timed(`links-check start in ${ns}`, start, 'links-check start'));
    return d;
  }

  /** The raw response {ok, value} | {ok:false, error}. */
  call(op, fields = {}) {
    const id = ++this.seq;
    const start = Date.now();
    const p = new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
    this.child.stdin.write(JSON.stringify({ id, op, ...fields }) + '\n');
    return withTimeout(p, budgets.ms('links-check call'), `links-check ${op} in ${this.ns}`).finally(() => timed(`links-check ${op} ${JSON.stringify(fields)} in ${this.ns}`, start, 'links-check call'));
  }

  /** The value, or throws with the product's error text. */
  async ok(op, fields = {}) {
    const r = await this.call(op, fields);
    if (!r.ok) throw new Error(`${op} ${JSON.stringify(fields)} in ${this.ns} failed: ${r.error.name}: ${r.error.message}`);
    return r.value;
  }

  getLink(name) {
    return this.ok('getLink', { args: [name] });
  }

  async close() {
    this.child.stdin.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(t);
  }
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)))]).finally(() => clearTimeout(t));
}

const show = (v) => (typeof v === 'string' ? v : util.inspect(v, { depth: 4, breakLength: Infinity }));

/** Collects checks, namespaces and drivers of one scenario. */
class Scenario {
  constructor(name) {
    this.name = name;
    this.checks = [];
    this.notes = [];
    this.namespaces = [];
    this.drivers = [];
  }

  /** `detail` is kept only when the check fails. */
  check(cond, what, detail) {
    const c = { ok: Boolean(cond), what };
    if (!c.ok && detail !== undefined) c.detail = show(detail);
    this.checks.push(c);
    return c.ok;
  }

  /** Partial deep equality: every key of `expected` must match. */
  match(actual, expected, what) {
    const good = actual !== null && actual !== undefined && Object.entries(expected).every(([k, v]) => util.isDeepStrictEqual(actual[k], v));
    return this.check(good, what, good ? undefined : { expected, actual });
  }

  note(text) {
    this.notes.push(text);
  }

  async netns(name) {
    await ip('netns', 'add', name);
    this.namespaces.push(name);
    await ip('-n', name, 'link', 'set', 'lo', 'up');
    return name;
  }

  async driver(ns) {
    const d = await Driver.start(ns);
    this.drivers.push(d);
    return d;
  }

  async cleanup() {
    for (const d of this.drivers.splice(0)) await d.close().catch(() => {});
    for (const ns of this.namespaces.splice(0).reverse()) {
      const r = await run('ip', ['netns', 'del', ns]);
      if (r.code !== 0) this.note(`ip netns del ${ns}: ${r.stderr.trim()}`);
    }
  }
}

/** What Docker does with the endpoint link after Join: into the container netns, eth0, address, up, routes. */
async function attach(hostNs, link, containerNs, cidr, routes = []) {
  await ip('-n', hostNs, 'link', 'set', link, 'netns', containerNs);
  await ip('-n', containerNs, 'link', 'set', link, 'name', 'eth0');
  await ip('-n', containerNs, 'addr', 'add', cidr, 'dev', 'eth0');
  await ip('-n', containerNs, 'link', 'set', 'eth0', 'up');
  for (const r of routes) await ip('-n', containerNs, 'route', 'add', ...r.split(' '));
}

/** A "host" namespace with an eth0-like NIC: a veth whose peer sits (up) in a "lan" namespace. */
async function hostWithNic(S, prefix, nic = 'eth0') {
  const h = await S.netns(`${prefix}-host`);
  const lan = await S.netns(`${prefix}-lan`);
  await ip('-n', h, 'link', 'add', nic, 'type', 'veth', 'peer', 'name', 'lan0', 'netns', lan);
  await ip('-n', h, 'link', 'set', nic, 'up');
  await ip('-n', lan, 'link', 'set', 'lan0', 'up');
  return h;
}

/** createEndpointLink with the options of the network, as the agent's CreateEndpoint/Join does. */
async function endpoint(S, d, opts, parent, name = endpointName()) {
  const o = await d.ok('parseNetworkOptions', { options: opts });
  await d.ok('createEndpointLink', {
    spec: { name, parent, type: o.type, macvlanMode: o.macvlanMode, ipvlanMode: o.ipvlanMode, ipvlanFlag: o.ipvlanFlag },
  });
  return name;
}

async function expectPing(S, from, to, what) {
  const r = await ping(from, to, true);
  S.check(r.replied, `${what}: ${from} pings ${to}`, r.out);
  if (r.replied && r.attempts > 1) S.note(`${from} -> ${to} needed ${r.attempts} attempts`);
  return r.replied;
}

/** The pings must go out (so a broken container setup cannot pass as isolation) and get no reply. */
async function expectNoPing(S, from, to, what) {
  const r = await ping(from, to, false);
  const sentNoReply = /\b0 packets received\b/.test(r.out) && !/\b0 packets transmitted\b/.test(r.out);
  S.check(!r.replied && sentNoReply, `${what}: ${from} cannot reach ${to}`, r.out);
}

// ------------------------------------------------------------------------------------------------
// scenarios

/** Two containers with ipvlan slaves of one parent; l2: same subnet; l3/l3s: different subnets, default dev eth0. */
async function ipvlanOneParent(S, mode) {
  const h = await hostWithNic(S, mode);
  const c1 = await S.netns(`${mode}-c1`);
  const c2 = await S.netns(`${mode}-c2`);
  const d = await S.driver(h);
  const opts = { type: 'ipvlan', parent: 'eth0', ipvlan_mode: mode };
  const nic = await d.getLink('eth0');
  S.match(await d.ok('ensureParent', { networkId: networkId(), options: opts }), { parent: 'eth0', created: false }, 'ensureParent uses the existing eth0');
  const names = [];
  for (let i = 0; i < 2; i++) {
    const name = await endpoint(S, d, opts, 'eth0');
    names.push(name);
    S.match(await d.getLink(name), { kind: 'ipvlan', ipvlanMode: mode, parentIndex: nic.index }, `endpoint ${i + 1} is an ipvlan ${mode} slave of eth0`);
  }
  // A repeated Join finds the link and does nothing.
  await d.ok('createEndpointLink', { spec: { name: names[0], parent: 'eth0', type: 'ipvlan', macvlanMode: 'bridge', ipvlanMode: mode, ipvlanFlag: 'bridge' } });
  S.check(true, 'createEndpointLink is idempotent');
  if (mode === 'l2') {
    await attach(h, names[0], c1, '192.0.2.2/24');
    await attach(h, names[1], c2, '192.0.2.3/24');
  } else {
    // Different subnets; Docker's CONNECTED route for ipvlan l3 is `default dev eth0`.
    await attach(h, names[0], c1, '198.51.100.2/24', ['default dev eth0']);
    await attach(h, names[1], c2, '203.0.113.2/24', ['default dev eth0']);
  }
  const detail = await ip('-n', c1, '-d', 'link', 'show', 'eth0');
  S.check(new RegExp(`ipvlan\\s+mode ${mode}\\b`).test(detail), `iproute2 sees eth0 in the container as ipvlan mode ${mode}`, detail);
  const [a1, a2] = mode === 'l2' ? ['192.0.2.2', '192.0.2.3'] : ['198.51.100.2', '203.0.113.2'];
  await expectPing(S, c1, a2, `ipvlan ${mode}`);
  await expectPing(S, c2, a1, `ipvlan ${mode}`);
}

/** Isolated (no -o parent) networks: dummy parents dm-/di-, created up, removed; containers on a dummy parent. */
async function dummyParents(S) {
  const h = await S.netns('dm-host');
  const c1 = await S.netns('dm-c1');
  const c2 = await S.netns('dm-c2');
  const c3 = await S.netns('dm-c3');
  const c4 = await S.netns('dm-c4');
  const d = await S.driver(h);

  // macvlan (the default type) -> dm-<12 of id>
  const idM = networkId();
  const dm = `dm-${idM.slice(0, 12)}`;
  S.match(await d.ok('ensureParent', { networkId: idM, options: {} }), { parent: dm, created: true }, 'ensureParent without parent (macvlan) creates dm-<12 of id>');
  const dmLink = await d.getLink(dm);
  S.match(dmLink, { kind: 'dummy', up: true }, `${dm} is a dummy link, up`);
  S.match(await d.ok('ensureParent', { networkId: idM, options: {} }), { parent: dm, created: true }, 'ensureParent again: same dummy');
  S.match(await d.getLink(dm), { index: dmLink && dmLink.index }, `${dm} was kept, not re-created`);
  S.check((await d.ok('listLinks')).filter((l) => l.name === dm).length === 1, `still one ${dm}`);
  // Two macvlan bridge containers on the dummy parent.
  const m1 = await endpoint(S, d, {}, dm);
  const m2 = await endpoint(S, d, {}, dm);
  S.match(await d.getLink(m1), { kind: 'macvlan', macvlanMode: 'bridge' }, 'macvlan endpoint on the dm- parent');
  await attach(h, m1, c3, '192.0.2.2/24');
  await attach(h, m2, c4, '192.0.2.3/24');
  await expectPing(S, c3, '192.0.2.3', 'macvlan bridge on a dummy parent');

  // ipvlan -> di-<12 of id>
  const idI = networkId();
  const di = `di-${idI.slice(0, 12)}`;
  const optsI = { type: 'ipvlan' };
  S.match(await d.ok('ensureParent', { networkId: idI, options: optsI }), { parent: di, created: true }, 'ensureParent without parent (ipvlan) creates di-<12 of id>');
  const diLink = await d.getLink(di);
  S.match(diLink, { kind: 'dummy', up: true }, `${di} is a dummy link, up`);
  const i1 = await endpoint(S, d, optsI, di);
  const i2 = await endpoint(S, d, optsI, di);
  S.match(await d.getLink(i1), { kind: 'ipvlan', ipvlanMode: 'l2', parentIndex: diLink && diLink.index }, 'ipvlan l2 endpoint on the di- parent');
  await attach(h, i1, c1, '198.51.100.2/24');
  await attach(h, i2, c2, '198.51.100.3/24');
  await expectPing(S, c1, '198.51.100.3', 'ipvlan l2 on a dummy parent');
  await expectPing(S, c2, '198.51.100.2', 'ipvlan l2 on a dummy parent');

  // Containers gone (Leave + sandbox deleted), then DeleteNetwork removes the parents.
  for (const c of [c1, c2, c3, c4]) {
    await ip('netns', 'del', c);
    S.namespaces.splice(S.namespaces.indexOf(c), 1);
  }
  await d.ok('removeCreatedParent', { name: di });
  S.check((await d.getLink(di)) === null, `removeCreatedParent deletes ${di}`);
  await d.ok('removeCreatedParent', { name: dm });
  S.check((await d.getLink(dm)) === null, `removeCreatedParent deletes ${dm}`);
  await d.ok('removeCreatedParent', { name: dm });
  S.check(true, 'removeCreatedParent of a missing link is a no-op');

  // Dummies that are not ours stay.
  await ip('-n', h, 'link', 'add', 'dm-zzzzzzzzzzzz', 'type', 'dummy');
  await ip('-n', h, 'link', 'add', 'dummy7', 'type', 'dummy');
  for (const n of ['dm-zzzzzzzzzzzz', 'dummy7']) {
    await d.ok('removeCreatedParent', { name: n });
    S.check((await d.getLink(n)) !== null, `removeCreatedParent leaves the foreign dummy ${n}`);
  }
}

/** ensureParent / removeCreatedParent with 802.1q parents (eth1.20) on a host with eth1. */
async function vlanParent(S) {
  const h = await hostWithNic(S, 'vl', 'eth1');
  const d = await S.driver(h);
  const eth1 = await d.getLink('eth1');

  // Missing sub-interface, existing base: created, id 20, up.
  S.match(await d.ok('ensureParent', { networkId: networkId(), options: { parent: 'eth1.20' } }), { parent: 'eth1.20', created: true }, 'ensureParent creates eth1.20');
  const v20 = await d.getLink('eth1.20');
  S.match(v20, { kind: 'vlan', vlanId: 20, up: true, parentIndex: eth1.index }, 'eth1.20 is vlan 20 on eth1, up');
  const detail = await ip('-n', h, '-d', 'link', 'show', 'eth1.20');
  S.check(/vlan protocol 802\.1Q id 20\b/.test(detail) && /eth1\.20@eth1/.test(detail), 'iproute2 sees eth1.20@eth1 vlan protocol 802.1Q id 20', detail);
  // Second network on the same parent: it exists now, so not "created" by this call (the agent's
  // store carries createdParent over from the first network).
  S.match(await d.ok('ensureParent', { networkId: networkId(), options: { type: 'ipvlan', parent: 'eth1.20' } }), { parent: 'eth1.20', created: false }, 'ensureParent again: eth1.20 exists, created false');
  S.match(await d.getLink('eth1.20'), { index: v20.index }, 'eth1.20 is the same link');
  await d.ok('removeCreatedParent', { name: 'eth1.20' });
  S.check((await d.getLink('eth1.20')) === null, 'removeCreatedParent deletes eth1.20');
  S.match(await d.getLink('eth1'), { index: eth1.index }, 'eth1 stays');

  // A vlan link the admin made (down) is used as is: same link, brought up, created false.
  await ip('-n', h, 'link', 'add', 'link', 'eth1', 'name', 'eth1.30', 'type', 'vlan', 'id', '30');
  const pre = await d.getLink('eth1.30');
  S.match(await d.ok('ensureParent', { networkId: networkId(), options: { parent: 'eth1.30' } }), { parent: 'eth1.30', created: false }, 'an existing eth1.30 is used: created false (so never removed)');
  S.match(await d.getLink('eth1.30'), { index: pre.index, kind: 'vlan', vlanId: 30, up: true }, 'eth1.30 is the same link, now up');

  // Links removeCreatedParent must leave: non-vlan with a dotted name, the base NIC, a vlan not named name.vid.
  await ip('-n', h, 'link', 'add', 'eth1.40', 'type', 'dummy');
  S.match(await d.ok('ensureParent', { networkId: networkId(), options: { parent: 'eth1.40' } }), { parent: 'eth1.40', created: false }, 'an existing non-vlan eth1.40 (dummy) is used as is');
  S.match(await d.getLink('eth1.40'), { kind: 'dummy', up: true }, 'eth1.40 is still the dummy, up');
  await ip('-n', h, 'link', 'add', 'link', 'eth1', 'name', 'vl50', 'type', 'vlan', 'id', '50');
  for (const n of ['eth1.40', 'eth1', 'vl50']) {
    await d.ok('removeCreatedParent', { name: n });
    S.check((await d.getLink(n)) !== null, `removeCreatedParent leaves ${n}`);
  }

  // Missing base link / missing plain parent / bad vlan id: libnetwork's texts, nothing created.
  for (const [parent, text] of [
    ['eth9.20', '-o parent interface was not found on the host: eth9'],
    ['eth9', '-o parent interface was not found on the host: eth9'],
    ['eth1.5000', 'vlan id must be between 1-4094, received: 5000'],
  ]) {
    const r = await d.call('ensureParent', { networkId: networkId(), options: { parent } });
    S.check(!r.ok && r.error.message === text, `ensureParent parent=${parent} fails with "${text}"`, r.ok ? r.value : r.error);
    S.check((await d.getLink(parent)) === null, `no ${parent} link was created`);
  }
}

/** Two hosts on a trunk (veth); VLAN 20 (macvlan bridge) and VLAN 30 (ipvlan l2) networks on both. */
async function vlanIsolation(S) {
  const hA = await S.netns('iso-hA');
  const hB = await S.netns('iso-hB');
  await ip('-n', hA, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1', 'netns', hB);
  await ip('-n', hA, 'link', 'set', 'eth1', 'up');
  await ip('-n', hB, 'link', 'set', 'eth1', 'up');
  const net20 = { id: networkId(), options: { parent: 'eth1.20' } }; // macvlan bridge (default)
  const net30 = { id: networkId(), options: { type: 'ipvlan', parent: 'eth1.30', ipvlan_mode: 'l2' } };
  const addr = { A20: '192.0.2.11', B20: '192.0.2.12', A30: '192.0.2.21', B30: '192.0.2.22' };
  const c = {};
  const drivers = {};
  for (const [host, ns] of [
    ['A', hA],
    ['B', hB],
  ]) {
    const d = await S.driver(ns);
    drivers[host] = d;
    for (const [vid, net] of [
      ['20', net20],
      ['30', net30],
    ]) {
      S.match(await d.ok('ensureParent', { networkId: net.id, options: net.options }), { parent: `eth1.${vid}`, created: true }, `host ${host}: ensureParent creates eth1.${vid}`);
      S.match(await d.getLink(`eth1.${vid}`), { kind: 'vlan', vlanId: Number(vid), up: true }, `host ${host}: eth1.${vid} is vlan ${vid}, up`);
      const link = await endpoint(S, d, net.options, `eth1.${vid}`);
      const cn = await S.netns(`iso-c${host}${vid}`);
      c[`${host}${vid}`] = cn;
      // All four in ONE subnet: only the VLANs separate them.
      await attach(ns, link, cn, `${addr[`${host}${vid}`]}/24`);
    }
  }
  const before = await linkStats(hB, 'eth1.20');
  await expectPing(S, c.A20, addr.B20, 'VLAN 20 across hosts (macvlan)');
  const after = await linkStats(hB, 'eth1.20');
  S.check(after.rx.packets > before.rx.packets, "host B's eth1.20 received the VLAN 20 traffic", { before: before.rx.packets, after: after.rx.packets });
  S.note(`host B eth1.20 rx packets ${before.rx.packets} -> ${after.rx.packets} during the VLAN 20 ping`);
  await expectPing(S, c.B20, addr.A20, 'VLAN 20 across hosts (macvlan)');
  await expectPing(S, c.A30, addr.B30, 'VLAN 30 across hosts (ipvlan l2)');
  // Each of these waits for its deadline: run them together.
  await Promise.all([
    expectNoPing(S, c.A20, addr.B30, 'VLAN 20 -> VLAN 30 across hosts'),
    expectNoPing(S, c.B30, addr.A20, 'VLAN 30 -> VLAN 20 across hosts'),
    expectNoPing(S, c.A20, addr.A30, 'VLAN 20 -> VLAN 30 on the same host'),
  ]);

  // Tear down: containers, then DeleteNetwork on both hosts removes the vlan links it created.
  for (const k of Object.keys(c)) {
    await ip('netns', 'del', c[k]);
    S.namespaces.splice(S.namespaces.indexOf(c[k]), 1);
  }
  for (const host of ['A', 'B']) {
    for (const vid of ['20', '30']) {
      await drivers[host].ok('removeCreatedParent', { name: `eth1.${vid}` });
      S.check((await drivers[host].getLink(`eth1.${vid}`)) === null, `host ${host}: removeCreatedParent deletes eth1.${vid}`);
    }
    S.check((await drivers[host].getLink('eth1')) !== null, `host ${host}: the trunk eth1 stays`);
  }
}

/**
 * Host reboot, simulated: the agent's store is kept, the links are gone. At start the agent re-creates the
 * 802.1q and dummy parents it had made, leaves a parent it did not make alone, and deletes endpoint links
 * (ul<11 hex>) that no stored endpoint owns.
 */
async function rebootRestore(S) {
  const h = await hostWithNic(S, 'rb', 'eth1');
  const d = await S.driver(h);
  const idV = networkId();
  const idD = networkId();
  const idE = networkId();
  const di = `di-${idD.slice(0, 12)}`;
  S.match(await d.ok('ensureParent', { networkId: idV, options: { parent: 'eth1.20' } }), { parent: 'eth1.20', created: true }, 'before: eth1.20 created');
  S.match(await d.ok('ensureParent', { networkId: idD, options: { type: 'ipvlan' } }), { parent: di, created: true }, `before: ${di} created`);
  const rec = (id, type, parent, requestedParent, createdParent, internal) => ({
    id, type, parent, requestedParent, createdParent, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal,
    ipv4: [{ pool: '192.0.2.0/24', gateway: '192.0.2.1/24' }], ipv6: [],
  });
  const networks = [rec(idV, 'macvlan', 'eth1.20', 'eth1.20', true, false), rec(idD, 'ipvlan', di, undefined, true, true), rec(idE, 'macvlan', 'eth1', 'eth1', false, false)];
  const owned = 'ul00000000001';
  const endpoints = [{ id: `00000000001${'0'.repeat(53)}`, networkId: idE, address: '192.0.2.5/24', srcName: owned }];
  // The reboot: every link underlay made is gone; a stale endpoint link (never handed to a container) and an owned one exist.
  await ip('-n', h, 'link', 'del', 'eth1.20');
  await ip('-n', h, 'link', 'del', di);
  await ip('-n', h, 'link', 'add', 'ul0123456789a', 'type', 'dummy');
  await ip('-n', h, 'link', 'add', owned, 'type', 'dummy');
  S.check((await d.getLink('eth1.20')) === null && (await d.getLink(di)) === null, 'after the "reboot" the parents are gone');
  const stateDir = `${process.env.UML_DIR || '/tmp'}/rb-state-${Date.now()}`;
  const report = await d.ok('restore', { stateDir, networks, endpoints });
  S.check(report.errors.length === 0, 'restore reports no errors', report.errors);
  S.check(JSON.stringify([...report.parentsRecreated].sort()) === JSON.stringify(['eth1.20', di].sort()), 'restore re-creates eth1.20 and the dummy', report);
  const eth1 = await d.getLink('eth1');
  S.match(await d.getLink('eth1.20'), { kind: 'vlan', vlanId: 20, up: true, parentIndex: eth1 && eth1.index }, 'eth1.20 is back: vlan 20 on eth1, up');
  S.match(await d.getLink(di), { kind: 'dummy', up: true }, `${di} is back, up`);
  S.check(JSON.stringify(report.staleLinksRemoved) === JSON.stringify(['ul0123456789a']), 'restore removes only the stale endpoint link', report.staleLinksRemoved);
  S.check((await d.getLink('ul0123456789a')) === null, 'the stale endpoint link is gone');
  S.check((await d.getLink(owned)) !== null, 'an endpoint link the store owns is kept');
  // Restoring again changes nothing.
  const again = await d.ok('restore', { stateDir });
  S.check(again.parentsRecreated.length === 0 && again.staleLinksRemoved.length === 0 && again.networks === 3, 'a second restore is a no-op', again);
}

const SCENARIOS = {
  'reboot-restore': rebootRestore,
  'ipvlan-l2': (S) => ipvlanOneParent(S, 'l2'),
  'ipvlan-l3': (S) => ipvlanOneParent(S, 'l3'),
  'ipvlan-l3s': (S) => ipvlanOneParent(S, 'l3s'),
  'dummy-parents': dummyParents,
  'vlan-parent': vlanParent,
  'vlan-isolation': vlanIsolation,
};

// ------------------------------------------------------------------------------------------------

async function main() {
  const resultFile = process.argv[2];
  if (!resultFile) throw new Error('usage: scenarios.js RESULT_FILE [SCENARIO ...]');
  const names = process.argv.slice(3).length ? process.argv.slice(3) : Object.keys(SCENARIOS);
  const t0 = Date.now();
  budgets = guestBudgets('uml-links'); // calibrates this machine (a second)
  const out = { uname: '', node: process.version, totalMs: 0, scenarios: {}, steps: [], budgets: budgets.info, durations };
  if (budgets.tooSlow) {
    out.error = budgets.tooSlow;
    fs.writeFileSync(resultFile, JSON.stringify(out, null, 2));
    throw new Error(budgets.tooSlow);
  }
  out.uname = (await ok('uname', ['-r'])).trim();
  const save = () => {
    out.totalMs = Date.now() - t0;
    fs.writeFileSync(`${resultFile}.tmp`, JSON.stringify(out, null, 2));
    fs.renameSync(`${resultFile}.tmp`, resultFile);
  };
  save();
  let seq = 0;
  for (const name of names) {
    const fn = SCENARIOS[name];
    const S = new Scenario(name);
    const start = Date.now();
    const step = `scenario ${name}`;
    const budgetMs = fn ? budgets.ms(step) : 0;
    const running = { seq: ++seq, name: step, budgetMs };
    budgets.progress([running]);
    let error;
    let overrun;
    if (!fn) error = `unknown scenario (known: ${Object.keys(SCENARIOS).join(', ')})`;
    else {
      // The scenario and its cleanup within the scenario's budget.
      const work = (async () => {
        try {
          await fn(S);
        } catch (e) {
          error = (e && e.stack) || String(e);
        }
        await S.cleanup();
      })();
      try {
        await withTimeout(work, budgetMs, step);
      } catch {
        overrun = budgets.overrun(step, step);
        error = overrun;
      }
    }
    const ms = Date.now() - start;
    budgets.progress([], step);
    if (fn) longest(step, ms);
    S.notes.push(...slow);
    slow = [];
    const pass = !error && S.checks.length > 0 && S.checks.every((c) => c.ok);
    out.scenarios[name] = { pass, ms, checks: S.checks, ...(error ? { error } : {}), notes: S.notes };
    out.steps.push({ name: step, code: overrun ? 'timeout' : pass ? 0 : 1, ms, budget: step, budgetMs, ...(overrun ? { error: overrun } : {}) });
    process.stdout.write(`scenario ${name}: ${pass ? 'PASS' : 'FAIL'} (${ms} ms)\n`);
    save();
    if (overrun) {
      // Its work may still be going on: the other scenarios would not be alone. Stop here.
      process.stdout.write(`${overrun}\n`);
      process.exit(1);
    }
  }
  process.exitCode = Object.values(out.scenarios).every((s) => s.pass) ? 0 : 1;
}

main().catch((e) => {
  process.stderr.write(`scenarios: ${(e && e.stack) || e}\n`);
  process.exitCode = 2;
});
