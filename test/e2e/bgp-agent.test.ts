/**
 * The whole BGP path through a real agent process (issue 6, part 2): a "top-of-rack" gobgpd in one lab
 * namespace, and on host h1 a bare gobgpd (API on a unix socket) driven by `underlay agent --bgp-asn …
 * --bgp-install-learned`. The ToR learns h1's block with h1's address as next hop; a route the ToR
 * announces is installed in h1's kernel with underlay's protocol number and removed on withdrawal. The agent
 * exports traces to a receiver in this test: the advertisement is an `apply event` span linked to the trace of the
 * request that claimed the block, with the `bgp addPath` call under it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Controller } from '@underlay/controller';
import { RpcClient, connectNats } from '@underlay/adapters';
import { RequestAddressRes, RequestPoolRes, UNDERLAY_RT_PROTO } from '@underlay/core';
import { runOk, startLabEtcd, startLabNats, waitFor, withLab, type LabHost } from '../lab';
import { CLI, ensureBuilt } from './support/cluster';
import { KIND, otelEnv, startOtlpReceiver } from '../otlp/receiver';

jest.setTimeout(180_000);
const ctx = withLab({ hosts: ['h1', 'tor'], features: ['lab', 'etcd', 'nats'] });

const TOR_ASN = 65000;
const H1_ASN = 65001;
const EXTERNAL = '203.0.113.0/24';

/** `gobgp` against a unix-socket API. */
const gobgp = (sock: string, args: string[]) => runOk('gobgp', ['--target', `unix://${sock}`, ...args], { timeoutMs: 10_000 });

describe('BGP through a real agent', () => {
  it('advertises its block to the ToR and installs, then removes, the ToR\'s route', async () => {
    const lab = ctx.lab;
    const h1: LabHost = ctx.host('h1');
    const tor: LabHost = ctx.host('tor');
    await ensureBuilt();
    const [etcd, nats] = await Promise.all([startLabEtcd(lab), startLabNats(lab)]);
    const controller = new Controller({ etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name: 'bgp' });
    await controller.start();
    await controller.whenLeader();
    lab.onDestroy('controller', () => controller.stop());

    // The ToR: passive towards h1.
    const torSock = path.join(lab.dir, 'tor.sock');
    const conf = path.join(lab.dir, 'tor.toml');
    fs.writeFileSync(
      conf,
      [
        '[global.config]',
        `  as = ${TOR_ASN}`,
        `  router-id = "${tor.address}"`,
        '  port = 179',
        `  local-address-list = ["${tor.address}"]`,
        '[[neighbors]]',
        '  [neighbors.config]',
        `    neighbor-address = "${h1.address}"`,
        `    peer-as = ${H1_ASN}`,
        '  [neighbors.transport.config]',
        '    passive-mode = true',
        '  [neighbors.timers.config]',
        '    connect-retry = 1',
        '    hold-time = 9',
        '    keepalive-interval = 3',
        '',
      ].join('\n'),
    );
    lab.spawnIn(tor, 'gobgpd', ['-f', conf, '--api-hosts', `unix://${torSock}`, '-p', '--pprof-disable'], { name: 'gobgpd' });
    // h1: a bare gobgpd; the agent configures it.
    const h1Sock = path.join(lab.dir, 'h1.sock');
    lab.spawnIn(h1, 'gobgpd', ['--api-hosts', `unix://${h1Sock}`, '-p', '--pprof-disable'], { name: 'gobgpd' });
    await waitFor(() => fs.existsSync(torSock) && fs.existsSync(h1Sock), { timeoutMs: 15_000, what: 'gobgpd API sockets' });

    const receiver = await startOtlpReceiver(lab.bridgeAddress);
    lab.onDestroy('otlp receiver', () => receiver.close());
    const stateDir = path.join(lab.dir, 'agent');
    const pluginDir = path.join(lab.dir, 'plugins');
    fs.mkdirSync(pluginDir, { recursive: true });
    const agent = lab.spawnIn(
      h1,
      process.execPath,
      [
        CLI, 'agent', '--node', 'h1', '--nats', nats.url, '--plugin-dir', pluginDir, '--state-dir', stateDir,
        '--docker', `unix://${path.join(lab.dir, 'no-docker.sock')}`, '--report-interval-ms', '500',
        '--address', h1.address, '--bgp-asn', String(H1_ASN), '--bgp-peers', `${tor.address}:${TOR_ASN}`,
        '--bgp-api', `unix:${h1Sock}`, '--bgp-install-learned', '--listen', `${h1.address}:7411`,
      ],
      { name: 'agent', env: { ...process.env, ...otelEnv(receiver.endpoint) } },
    );

    // The session comes up (the agent added the ToR as a peer).
    await waitFor(async () => /Establ/.test(await gobgp(torSock, ['neighbor'])), { timeoutMs: 30_000, what: 'BGP session ToR–h1', proc: agent });

    // h1 claims a block (as its Docker's RequestPool and RequestAddress do): the ToR learns it via h1.
    const nc = await connectNats(nats.url, 'bgp-agent-test');
    lab.onDestroy('nats client', () => nc.close());
    const rpc = new RpcClient(nc, 'h1');
    const pool = await rpc.call('requestPool', { node: 'h1', space: 'underlay', pool: '198.18.0.0/22', subPool: '', options: {}, v6: false, requestId: 'p1' }, RequestPoolRes);
    const trace = '0123456789abcdef0123456789abcdef';
    await rpc.call('requestAddress', { node: 'h1', poolId: pool.poolId, address: '', options: {}, requestId: 'a1', kind: 'endpoint' }, RequestAddressRes, { traceparent: `00-${trace}-0123456789abcdef-01` });
    await waitFor(async () => (await gobgp(torSock, ['global', 'rib', '-a', 'ipv4', '-j'])).includes('198.18.0.0/26'), { timeoutMs: 15_000, what: 'the ToR to learn 198.18.0.0/26', proc: agent });
    const rib = JSON.parse(await gobgp(torSock, ['global', 'rib', '-a', 'ipv4', '-j'])) as Record<string, { attrs: { type: number; nexthop?: string }[] }[]>;
    expect(rib['198.18.0.0/26']?.[0]?.attrs.find((a) => a.type === 3)?.nexthop).toBe(h1.address);
    const applied = await receiver.waitFor('apply event on h1 linked to the block claim', (x) => x.instance === 'h1' && x.name === 'apply event' && x.links.some((l) => l.traceId === trace), 10_000);
    expect(applied.kind).toBe(KIND.consumer);
    await receiver.waitFor('bgp addPath under it', (x) => x.name === 'bgp addPath' && x.parentSpanId === applied.spanId, 10_000);

    // The ToR announces a route: h1's kernel gets it with underlay's protocol number, out of the link to the ToR.
    const routes = () => lab.execOk(h1, 'ip', ['-4', 'route', 'show', 'proto', String(UNDERLAY_RT_PROTO)]);
    await gobgp(torSock, ['global', 'rib', 'add', '-a', 'ipv4', EXTERNAL, 'nexthop', tor.address]);
    await waitFor(async () => (await routes()).includes(`${EXTERNAL} via ${tor.address} dev eth1`), { timeoutMs: 15_000, what: `${EXTERNAL} installed on h1`, proc: agent });
    // The agent's metrics (--listen on its lab address): the session is up, the learned route is one of its routes.
    const metrics = await (await fetch(`http://${h1.address}:7411/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
    expect(metrics).toContain(`underlay_bgp_session_up{peer="${tor.address}"} 1`);
    expect(metrics).toMatch(/^underlay_routes [1-9]/m);
    expect(metrics).toMatch(/^underlay_reconcile_passes_total\{loop="bgp"\} [1-9]/m);
    // Withdrawn: gone from the kernel; other routes (the lab's connected route) untouched.
    await gobgp(torSock, ['global', 'rib', 'del', '-a', 'ipv4', EXTERNAL]);
    await waitFor(async () => !(await routes()).includes(EXTERNAL), { timeoutMs: 15_000, what: `${EXTERNAL} removed from h1`, proc: agent });
    expect(await lab.execOk(h1, 'ip', ['-4', 'route', 'show'])).toContain(`${h1.cidr.replace(/\.\d+\//, '.0/')} dev eth1`);
  });
});
