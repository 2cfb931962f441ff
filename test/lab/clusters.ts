// Throw-away clusters: a three-member etcd cluster and a three-node NATS cluster with JetStream, each member on
// its own ports with its own data directory, every member killable (SIGKILL) and restartable with the same data.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { requireExecutable } from './run';
import { type Proc, spawnLogged, stopProcess } from './spawn';
import { waitFor } from './wait';
import { freePort, httpGet, tcpConnects } from './probes';
import { clientHost, portTakenOr, withPortRetry, type ServiceOptions } from './services';

export interface ClusterOptions extends ServiceOptions {
  /** Members (default 3). */
  size?: number;
}

/** One member of a cluster: its process may be killed and started again on the same ports and data. */
export interface ClusterMember {
  /** Member name (etcd `--name`, nats `server_name`). */
  readonly name: string;
  /** Client URL (http://127.0.0.1:PORT for etcd, nats://127.0.0.1:PORT for NATS). */
  readonly url: string;
  readonly port: number;
  /** The member's directory: data and log. */
  readonly dir: string;
  readonly logFile: string;
  /** The current process (a new one after restart()). */
  readonly proc: Proc;
  readonly pid: number;
  running(): boolean;
  /** SIGKILL (its process group) and wait until it is gone: a crash, nothing flushed. */
  kill(): Promise<void>;
  /** Starts it again with the same ports and data directory; resolves when it is healthy again. */
  restart(): Promise<void>;
  /** SIGTERM, then SIGKILL. Idempotent; restart() may follow. */
  stop(): Promise<void>;
}

export interface EtcdCluster {
  name: string;
  members: ClusterMember[];
  /** Every member's client URL (what `--etcd` takes). */
  endpoints: string[];
  /** The member that is raft leader now (from etcd_server_is_leader in /metrics), waiting up to timeoutMs for one. */
  leader(timeoutMs?: number): Promise<ClusterMember>;
  stop(): Promise<void>;
}

export interface NatsCluster {
  name: string;
  members: NatsClusterMember[];
  /** Every server's client URL (what `--nats` takes). */
  urls: string[];
  /** The server that leads a stream's raft group (from /jsz), or undefined when none does. */
  streamLeader(stream: string): Promise<NatsClusterMember | undefined>;
  stop(): Promise<void>;
}

export interface NatsClusterMember extends ClusterMember {
  monitorUrl: string;
  configFile: string;
}

export interface NatsClusterOptions extends ClusterOptions {
  /** More nats-server configuration (authentication…), appended to each server's file. */
  config?: string;
}

/** `n` distinct ports that were free a moment ago. */
async function freePorts(host: string, n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort(host));
  return [...out];
}

/** A member whose process is (re)started by `spawn`, healthy when `healthy` says so. */
function member(o: {
  name: string;
  url: string;
  port: number;
  dir: string;
  logFile: string;
  timeoutMs: number;
  spawn: () => Proc;
  healthy: () => Promise<boolean>;
  what: string;
  /** Extra fields (NATS: monitor URL, config file). */
  extra?: Record<string, unknown>;
}): ClusterMember & { waitHealthy(): Promise<void> } {
  let proc = o.spawn();
  let stopping: Promise<void> | undefined;
  const m = {
    name: o.name,
    url: o.url,
    port: o.port,
    dir: o.dir,
    logFile: o.logFile,
    ...o.extra,
    get proc() {
      return proc;
    },
    get pid() {
      return proc.pid;
    },
    running: () => proc.isRunning(),
    async waitHealthy() {
      await waitFor(o.healthy, { timeoutMs: o.timeoutMs, what: o.what, proc, intervalMs: 100 });
    },
    async kill() {
      await stopProcess(proc, 'SIGKILL', 5_000);
    },
    async restart() {
      if (proc.isRunning()) throw new Error(`${o.name} is still running (pid ${proc.pid}): kill or stop it before restart`);
      stopping = undefined;
      proc = o.spawn();
      await m.waitHealthy();
    },
    stop() {
      return (stopping ??= (() => {
        try {
          process.kill(proc.pid, 'SIGCONT'); // a paused (SIGSTOP) member does not act on SIGTERM
        } catch {
          /* gone already */
        }
        return stopProcess(proc, 'SIGTERM', 5_000);
      })());
    },
  };
  return m;
}

/**
 * Starts a `size`-member etcd cluster (default 3) on `host` (default 127.0.0.1), peers on 127.0.0.1; resolves when
 * every member's /health says {"health":"true"} (the cluster has a leader and each member has joined).
 */
export async function startEtcdCluster(opts: ClusterOptions): Promise<EtcdCluster> {
  const bin = requireExecutable('etcd', 'install the Debian package etcd-server');
  const host = opts.host ?? '127.0.0.1';
  const ch = clientHost(host);
  const size = opts.size ?? 3;
  const name = opts.name ?? `etcd-cluster-${process.pid}-${Date.now().toString(36)}`;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return withPortRetry(async () => {
    const base = path.join(opts.dir, name);
    fs.rmSync(base, { recursive: true, force: true });
    const clientPorts = await freePorts(ch, size);
    const peerPorts = await freePorts('127.0.0.1', size);
    const names = clientPorts.map((_, i) => `${name}-e${i + 1}`);
    const peerUrl = (i: number) => `http://127.0.0.1:${peerPorts[i]}`;
    const initialCluster = names.map((n, i) => `${n}=${peerUrl(i)}`).join(',');
    const members = names.map((n, i) => {
      const dir = path.join(base, `e${i + 1}`);
      fs.mkdirSync(dir, { recursive: true });
      const url = `http://${ch}:${clientPorts[i]}`;
      const logFile = path.join(dir, 'etcd.log');
      // On a restart the data directory exists: etcd ignores the --initial-* flags and rejoins as the same member.
      const args = [
        '--name', n,
        '--data-dir', path.join(dir, 'data'),
        '--listen-client-urls', `http://${host}:${clientPorts[i]}`,
        '--advertise-client-urls', url,
        '--listen-peer-urls', peerUrl(i),
        '--initial-advertise-peer-urls', peerUrl(i),
        '--initial-cluster', initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', name,
        '--logger', 'zap',
        '--log-outputs', 'stderr',
      ];
      return member({
        name: n,
        url,
        port: clientPorts[i]!,
        dir,
        logFile,
        timeoutMs,
        spawn: () => spawnLogged(bin, args, { name: n, logFile }),
        healthy: async () => {
          const r = await httpGet(`${url}/health`, 1_000);
          return r.status === 200 && (JSON.parse(r.body) as { health?: string }).health === 'true';
        },
        what: `etcd member ${n} at ${url}/health to report {"health":"true"} (cluster ${name})`,
      });
    });
    try {
      await Promise.all(members.map((m) => m.waitHealthy()));
    } catch (e) {
      await Promise.all(members.map((m) => m.kill().catch(() => undefined)));
      throw portTakenOr(e, ...members.map((m) => m.logFile));
    }
    const isLeader = async (m: ClusterMember) => {
      if (!m.running()) return false;
      const r = await httpGet(`${m.url}/metrics`, 1_000).catch(() => undefined);
      return !!r && /^etcd_server_is_leader 1$/m.test(r.body);
    };
    return {
      name,
      members,
      endpoints: members.map((m) => m.url),
      async leader(waitMs = timeoutMs) {
        let found: ClusterMember | undefined;
        await waitFor(
          async () => {
            for (const m of members) if (await isLeader(m)) return (found = m), true;
            return false;
          },
          { timeoutMs: waitMs, what: `a raft leader among the members of etcd cluster ${name}`, intervalMs: 50 },
        );
        return found!;
      },
      stop: async () => {
        await Promise.all(members.map((m) => m.stop()));
      },
    };
  });
}

/**
 * Starts a `size`-node NATS cluster (default 3) with JetStream: each server its own `server_name`, store directory
 * and configuration file (a `cluster` block whose routes name every server); clients on `host` (default 127.0.0.1),
 * routes on 127.0.0.1. Resolves when every server's /healthz is ok and JetStream has a meta leader.
 */
export async function startNatsCluster(opts: NatsClusterOptions): Promise<NatsCluster> {
  const bin = requireExecutable('nats-server', 'install the Debian package nats-server');
  const host = opts.host ?? '127.0.0.1';
  const ch = clientHost(host);
  const size = opts.size ?? 3;
  const name = opts.name ?? `nats-cluster-${process.pid}-${Date.now().toString(36)}`;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return withPortRetry(async () => {
    const base = path.join(opts.dir, name);
    fs.rmSync(base, { recursive: true, force: true });
    const ports = await freePorts(ch, size * 2);
    const clientPorts = ports.slice(0, size);
    const monitorPorts = ports.slice(size);
    const routePorts = await freePorts('127.0.0.1', size);
    const routes = routePorts.map((p) => `"nats-route://127.0.0.1:${p}"`).join(', ');
    const members = clientPorts.map((port, i) => {
      const n = `${name}-n${i + 1}`;
      const dir = path.join(base, `n${i + 1}`);
      fs.mkdirSync(path.join(dir, 'js'), { recursive: true });
      const configFile = path.join(dir, 'nats.conf');
      fs.writeFileSync(
        configFile,
        [
          `server_name: "${n}"`,
          `listen: "${host}:${port}"`,
          `http: "${host}:${monitorPorts[i]}"`,
          `jetstream { store_dir: "${path.join(dir, 'js')}" }`,
          `cluster {`,
          `  name: "${name}"`,
          `  listen: "127.0.0.1:${routePorts[i]}"`,
          `  routes: [${routes}]`,
          `}`,
          opts.config ?? '',
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      const url = `nats://${ch}:${port}`;
      const monitorUrl = `http://${ch}:${monitorPorts[i]}`;
      const logFile = path.join(dir, 'nats.log');
      return member({
        name: n,
        url,
        port,
        dir,
        logFile,
        timeoutMs,
        spawn: () => spawnLogged(bin, ['-c', configFile], { name: n, logFile }),
        healthy: async () => {
          if (!(await tcpConnects(ch, port, 1_000))) return false;
          const h = await httpGet(`${monitorUrl}/healthz`, 1_000);
          if (h.status !== 200 || !/"ok"/.test(h.body)) return false;
          const j = JSON.parse((await httpGet(`${monitorUrl}/jsz`, 1_000)).body) as { meta_cluster?: { leader?: string; cluster_size?: number } };
          return !!j.meta_cluster?.leader;
        },
        what: `NATS server ${n} at ${url} (monitor ${monitorUrl}/healthz ok, /jsz with a JetStream meta leader; cluster ${name})`,
        extra: { monitorUrl, configFile },
      }) as NatsClusterMember & { waitHealthy(): Promise<void> };
    });
    try {
      await Promise.all(members.map((m) => m.waitHealthy()));
    } catch (e) {
      await Promise.all(members.map((m) => m.kill().catch(() => undefined)));
      throw portTakenOr(e, ...members.map((m) => m.logFile));
    }
    return {
      name,
      members,
      urls: members.map((m) => m.url),
      async streamLeader(stream) {
        for (const m of members) {
          if (!m.running()) continue;
          const r = await httpGet(`${m.monitorUrl}/jsz?accounts=true&streams=true`, 1_000).catch(() => undefined);
          if (!r || r.status !== 200) continue;
          const j = JSON.parse(r.body) as { account_details?: { stream_detail?: { name: string; cluster?: { leader?: string } }[] }[] };
          const leader = j.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === stream)?.cluster?.leader;
          if (leader) return members.find((x) => x.name === leader);
        }
        return undefined;
      },
      stop: async () => {
        await Promise.all(members.map((m) => m.stop()));
      },
    };
  });
}
