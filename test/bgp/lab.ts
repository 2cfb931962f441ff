/**
 * A BGP lab of its own (separate from the shared e2e lab in test/lab, which uses 198.51.100.0/24 and a
 * machine-wide lock): network namespaces `ulbgp<4 hex>-tor`, `-h1`, `-h2`…, all created and removed here.
 * Nothing is done in the root namespace: the bridge `br0` (203.0.113.254/24) lives in the ToR namespace, and
 * each host's `eth1` (203.0.113.<n>/24) is a veth whose other end is created directly in the ToR namespace.
 *
 * Each namespace runs its own gobgpd (`ip netns exec NS gobgpd`), with its gRPC API on a unix socket in the
 * lab directory (never on an address), so the test process talks to it without entering the namespace. The
 * ToR's gobgpd has a config file (AS 65000, listening on 203.0.113.254:179, passive peers); the hosts' are
 * started bare, as an agent finds them, and configured through the API by the BgpService.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GobgpClient } from '@underlay/adapters';
import { requireExecutable, runOk, run } from '../lab/run';
import { spawnLogged, stopProcess, type Proc } from '../lab/spawn';
import { waitFor } from '../lab/wait';

export const BGP_NET = '203.0.113';
export const TOR_ADDRESS = `${BGP_NET}.254`;
export const TOR_ASN = 65000;

export interface BgpHost {
  name: string;
  ns: string;
  address: string;
  asn: number;
  /** Unix socket of this host's gobgpd API (`unix:` + path is the gRPC target). */
  socket: string;
  api: string;
  gobgpd?: Proc;
}

export interface BgpLab {
  id: string;
  dir: string;
  torNs: string;
  torApi: string;
  tor: GobgpClient;
  hosts: BgpHost[];
  /** Starts (or restarts) a host's bare gobgpd; resolves when its API answers. */
  startHostGobgpd(h: BgpHost): Promise<void>;
  stopHostGobgpd(h: BgpHost): Promise<void>;
  /** `gobgp` CLI against a namespace's API socket (independent of our client's decoding). */
  cli(api: string, args: string[]): Promise<string>;
  close(): Promise<void>;
}

/** Why this lab cannot run here, or undefined when it can. */
export function bgpLabMissing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  for (const cmd of ['ip', 'gobgpd', 'gobgp']) {
    try {
      requireExecutable(cmd);
    } catch (e) {
      return (e as Error).message;
    }
  }
  return undefined;
}

const hostAsn = (i: number) => 65001 + i;

function torConfig(hosts: readonly { address: string; asn: number }[]): string {
  const lines = [
    '[global.config]',
    `  as = ${TOR_ASN}`,
    `  router-id = "${TOR_ADDRESS}"`,
    '  port = 179',
    `  local-address-list = ["${TOR_ADDRESS}"]`,
  ];
  for (const h of hosts) {
    lines.push(
      '[[neighbors]]',
      '  [neighbors.config]',
      `    neighbor-address = "${h.address}"`,
      `    peer-as = ${h.asn}`,
      '  [neighbors.transport.config]',
      '    passive-mode = true',
      `    local-address = "${TOR_ADDRESS}"`,
      '  [neighbors.timers.config]',
      '    connect-retry = 1',
      '    hold-time = 9',
      '    keepalive-interval = 3',
      '  [[neighbors.afi-safis]]',
      '    [neighbors.afi-safis.config]',
      '      afi-safi-name = "ipv4-unicast"',
      '  [[neighbors.afi-safis]]',
      '    [neighbors.afi-safis.config]',
      '      afi-safi-name = "ipv6-unicast"',
    );
  }
  return lines.join('\n') + '\n';
}

async function waitApi(api: string, proc: Proc): Promise<void> {
  const c = GobgpClient.connect(api, { deadlineMs: 1_000 });
  try {
    await waitFor(async () => (await c.listPeers().then(() => true)), { timeoutMs: 15_000, what: `gobgpd API ${api}`, proc, intervalMs: 100 });
  } finally {
    c.close();
  }
}

export async function createBgpLab(hostCount = 2): Promise<BgpLab> {
  const id = randomBytes(2).toString('hex');
  const prefix = `ulbgp${id}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  const torNs = `${prefix}-tor`;
  const namespaces: string[] = [];
  const procs: Proc[] = [];
  const hosts: BgpHost[] = Array.from({ length: hostCount }, (_, i) => {
    const socket = path.join(dir, `h${i + 1}.sock`);
    return { name: `h${i + 1}`, ns: `${prefix}-h${i + 1}`, address: `${BGP_NET}.${i + 1}`, asn: hostAsn(i), socket, api: `unix:${socket}` };
  });
  const torSocket = path.join(dir, 'tor.sock');
  let tor: GobgpClient | undefined;

  const close = async () => {
    tor?.close();
    for (const h of hosts) if (h.gobgpd) await stopProcess(h.gobgpd, 'SIGTERM', 5_000).catch(() => {});
    for (const p of procs) await stopProcess(p, 'SIGTERM', 5_000).catch(() => {});
    // Deleting a namespace deletes its links (the veth pairs and the bridge) with it.
    for (const ns of namespaces.reverse()) await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 });
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    const ip = (...args: string[]) => runOk('ip', args, { timeoutMs: 10_000 });
    await ip('netns', 'add', torNs);
    namespaces.push(torNs);
    await ip('-n', torNs, 'link', 'set', 'lo', 'up');
    await ip('-n', torNs, 'link', 'add', 'br0', 'type', 'bridge');
    await ip('-n', torNs, 'addr', 'add', `${TOR_ADDRESS}/24`, 'dev', 'br0');
    await ip('-n', torNs, 'link', 'set', 'br0', 'up');
    for (const h of hosts) {
      await ip('netns', 'add', h.ns);
      namespaces.push(h.ns);
      await ip('-n', h.ns, 'link', 'set', 'lo', 'up');
      await ip('-n', h.ns, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', `v-${h.name}`, 'netns', torNs);
      await ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth1');
      await ip('-n', h.ns, 'link', 'set', 'eth1', 'up');
      await ip('-n', torNs, 'link', 'set', `v-${h.name}`, 'master', 'br0');
      await ip('-n', torNs, 'link', 'set', `v-${h.name}`, 'up');
    }
    const conf = path.join(dir, 'tor.toml');
    fs.writeFileSync(conf, torConfig(hosts));
    const torProc = spawnLogged('ip', ['netns', 'exec', torNs, 'gobgpd', '-f', conf, '--api-hosts', `unix://${torSocket}`, '-p', '--pprof-disable'], {
      name: 'gobgpd-tor',
      logFile: path.join(dir, 'tor.log'),
    });
    procs.push(torProc);
    await waitApi(`unix:${torSocket}`, torProc);
    tor = GobgpClient.connect(`unix:${torSocket}`);

    const lab: BgpLab = {
      id,
      dir,
      torNs,
      torApi: `unix:${torSocket}`,
      tor,
      hosts,
      async startHostGobgpd(h) {
        if (h.gobgpd?.isRunning()) return;
        fs.rmSync(h.socket, { force: true });
        h.gobgpd = spawnLogged('ip', ['netns', 'exec', h.ns, 'gobgpd', '--api-hosts', `unix://${h.socket}`, '-p', '--pprof-disable'], {
          name: `gobgpd-${h.name}`,
          logFile: path.join(dir, `${h.name}.log`),
        });
        await waitApi(h.api, h.gobgpd);
      },
      async stopHostGobgpd(h) {
        if (h.gobgpd) await stopProcess(h.gobgpd, 'SIGTERM', 5_000);
      },
      async cli(api, args) {
        return runOk('gobgp', ['--target', api.replace(/^unix:(?!\/\/)/, 'unix://'), ...args], { timeoutMs: 10_000 });
      },
      close,
    };
    return lab;
  } catch (e) {
    await close();
    throw e;
  }
}
