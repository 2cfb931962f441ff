/**
 * An underlay cluster in a lab: etcd and NATS on the lab bridge, one controller (in this process,
 * in the root namespace), and per host a dockerd and a real agent process (`underlay agent`) inside
 * the host's network namespace, serving the plugin socket that host's dockerd reads.
 *
 * NATS runs with authentication as in production (operator, account, users): the controller has controller
 * credentials and every agent its own node's (`--nats-creds`), so every end-to-end test also shows that agents
 * work within a node's permissions.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { Controller, type ControllerConfigInput } from '@underlay/controller';
import { controllerCreds, initNatsKeys, natsServerConfig, nodeCreds, writePrivateFile, type NatsKeys } from '@underlay/adapters';
import { nodeToken } from '@underlay/core';
import {
  importBusybox,
  run,
  runOk,
  startDockerd,
  startLabEtcd,
  startLabNats,
  waitFor,
  type Dockerd,
  type Lab,
  type LabHost,
  type Proc,
} from '../../lab';

export const ROOT = path.resolve(__dirname, '../../..');
export const CLI = path.join(ROOT, 'cli/bin/underlay.js');

/** The agent runs the compiled CLI: make sure dist/ is current (incremental, quick when it is). */
export async function ensureBuilt(): Promise<void> {
  await runOk(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-b'], { cwd: ROOT, timeoutMs: 180_000 });
}

export interface HostNode {
  host: LabHost;
  docker: Dockerd;
  agent: Proc;
  stateDir: string;
}

export interface Cluster {
  lab: Lab;
  controller: Controller;
  natsUrl: string;
  /** nats-server's process id (a test may SIGSTOP and SIGCONT it). */
  natsPid: number;
  etcdUrl: string;
  /** The NATS key store (undefined with `natsAuth: false`). */
  natsKeys?: NatsKeys;
  /** Writes a node's (or, with `controller: true`, a controller's) .creds file and returns its path. */
  credsFile(name: string, o?: { controller?: boolean }): Promise<string | undefined>;
  nodes: Map<string, HostNode>;
  startAgent(host: LabHost, d: Dockerd): Promise<Proc>;
  /** Starts a dockerd and an agent on a lab host that was not started with the cluster. */
  addHost(host: LabHost, o?: { authz?: boolean }): Promise<HostNode>;
  /** Stops a host's agent (SIGTERM, or SIGKILL) and waits until it has exited. */
  stopAgent(name: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a stopped host's agent again. */
  restartAgent(name: string): Promise<void>;
}

export interface ClusterOptions {
  controller?: Partial<ControllerConfigInput>;
  /** Agents' --report-interval-ms. */
  reportIntervalMs?: number;
  /** More flags for every agent. */
  agentArgs?: string[];
  /** Turn on underlay's authorization hook in every dockerd (after its agent is up). */
  authz?: boolean;
  /** NATS with users (default true). */
  natsAuth?: boolean;
  /** More environment for every agent (e.g. OTEL_*). */
  agentEnv?: Record<string, string>;
}

/**
 * Adds underlay as dockerd's authorization plugin through a configuration reload (SIGHUP): dockerd
 * checks the plugin when it loads the setting, so the agent must be serving first.
 */
export async function enableAuthz(d: Dockerd): Promise<void> {
  const file = path.join(d.dir, 'daemon.json');
  const cfg = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(file, JSON.stringify({ ...cfg, 'authorization-plugins': ['underlay'] }, null, 2));
  const before = (fs.readFileSync(d.logFile, 'utf8').match(/Reloaded configuration/g) ?? []).length;
  process.kill(d.pid, 'SIGHUP');
  await waitFor(() => (fs.readFileSync(d.logFile, 'utf8').match(/Reloaded configuration/g) ?? []).length > before, { timeoutMs: 20_000, what: `dockerd on ${d.host.name} reloaded with the authorization plugin` });
}

export async function startCluster(lab: Lab, hosts: LabHost[], opts: ClusterOptions = {}): Promise<Cluster> {
  await ensureBuilt();
  const natsKeys = opts.natsAuth === false ? undefined : await initNatsKeys(path.join(lab.dir, 'keys'));
  const [etcd, nats] = await Promise.all([startLabEtcd(lab), startLabNats(lab, natsKeys ? { config: natsServerConfig(natsKeys) } : {})]);
  const credsFile = async (name: string, o: { controller?: boolean } = {}): Promise<string | undefined> => {
    if (!natsKeys) return undefined;
    const file = path.join(lab.dir, 'keys', `${o.controller ? 'controller' : 'node'}-${nodeToken(name)}.creds`);
    writePrivateFile(file, o.controller ? await controllerCreds(natsKeys, name) : await nodeCreds(natsKeys, name));
    return file;
  };
  const controller = new Controller(
    { etcd: [etcd.url], nats: nats.url, natsCreds: await credsFile('e2e', { controller: true }), listen: '127.0.0.1:0', name: 'e2e', ...opts.controller },
    // Its log lines (reclaims, failed passes) go to the lab directory, beside the agents' and dockerds' logs.
    (m) => {
      try {
        fs.appendFileSync(path.join(lab.dir, 'controller.log'), `${new Date().toISOString()} ${m}\n`);
      } catch {
        // the lab directory is gone (teardown)
      }
    },
  );
  await controller.start();
  await controller.whenLeader();
  lab.onDestroy('controller', () => controller.stop());
  const cluster: Cluster = {
    lab,
    controller,
    natsUrl: nats.url,
    natsPid: nats.pid,
    etcdUrl: etcd.url,
    natsKeys,
    credsFile,
    nodes: new Map(),
    async startAgent(host, d) {
      const stateDir = path.join(lab.dir, 'agent', host.name);
      fs.mkdirSync(stateDir, { recursive: true });
      const report = opts.reportIntervalMs ? ['--report-interval-ms', String(opts.reportIntervalMs)] : [];
      const creds = await credsFile(host.name);
      const proc = lab.spawnIn(
        host,
        process.execPath,
        [CLI, 'agent', '--node', host.name, '--nats', nats.url, '--plugin-dir', d.pluginDir, '--state-dir', stateDir, '--docker', d.dockerHost, ...(creds ? ['--nats-creds', creds] : []), ...report, ...(opts.agentArgs ?? [])],
        { name: 'agent', ...(opts.agentEnv ? { env: { ...process.env, ...opts.agentEnv } } : {}) },
      );
      await waitFor(() => fs.existsSync(d.pluginSocket()), { timeoutMs: 20_000, what: `agent socket on ${host.name}` });
      return proc;
    },
    async addHost(host, o = {}) {
      const docker = await startDockerd(lab, host);
      await importBusybox(docker);
      const agent = await cluster.startAgent(host, docker);
      if (o.authz ?? opts.authz) await enableAuthz(docker);
      const node = { host, docker, agent, stateDir: path.join(lab.dir, 'agent', host.name) };
      cluster.nodes.set(host.name, node);
      return node;
    },
    async stopAgent(name, signal = 'SIGTERM') {
      const n = cluster.nodes.get(name)!;
      if (!n.agent.isRunning()) return;
      process.kill(n.agent.pid, signal);
      await n.agent.exited;
      // A killed agent leaves its socket behind; the next one replaces it.
      fs.rmSync(n.docker.pluginSocket(), { force: true });
    },
    async restartAgent(name) {
      const n = cluster.nodes.get(name)!;
      n.agent = await cluster.startAgent(n.host, n.docker);
    },
  };
  await Promise.all(hosts.map((host) => cluster.addHost(host)));
  return cluster;
}

/** Links in a host namespace other than lo and the lab uplink. */
export async function extraLinks(lab: Lab, host: LabHost): Promise<string[]> {
  const out = await lab.execOk(host, 'ip', ['-o', 'link', 'show']);
  return out
    .split('\n')
    .map((l) => /^\d+:\s+([^:@]+)/.exec(l)?.[1])
    .filter((n): n is string => !!n && n !== 'lo' && n !== host.parent);
}

/** The operator CLI against the cluster's controller (its URL and token in the environment), as a user runs it. */
export async function operatorCli(cluster: Cluster, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { host, port } = cluster.controller.httpAddress!;
  const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, UNDERLAY_CONTROLLER: `http://${host}:${port}`, UNDERLAY_TOKEN: cluster.controller.apiToken }, timeoutMs: 30_000 });
  return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export async function containerIp(d: Dockerd, name: string, network: string): Promise<string> {
  const out = await d.dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, name]);
  return out.trim();
}

/** POSTs to a plugin socket as dockerd does; resolves with the decoded JSON of a 200 answer. */
export function pluginPost(socketPath: string, method: string, body = ''): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: method, method: 'POST', headers: { Accept: 'application/vnd.docker.plugins.v1.2+json' } }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(data)) : reject(new Error(`HTTP ${res.statusCode}: ${data}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}
