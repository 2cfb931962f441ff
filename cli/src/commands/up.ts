/**
 * `underlay up`: the embedded single-host stack. etcd and nats-server (from PATH) with their data
 * under the state directory, one controller and one agent in this process. Ctrl-C or SIGTERM stops
 * all of it and leaves no process behind.
 *
 * NATS runs with decentralized authentication unless `--nats-auth=false`: the key store in
 * `<state-dir>/nats/` is made on the first run (as `underlay creds init`), nats-server gets the configuration
 * `underlay creds nats-config` prints, and the controller (user `controller`) and the agent (its node) get
 * `.creds` files issued at every start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { Controller, ControllerConfig } from '@underlay/controller';
import { Agent, AgentConfig } from '@underlay/node-agent';
import { DEFAULT_STREAM_LIMITS, NatsKeysError, RetryExhausted, retry, controllerCreds, ensureNatsKeys, natsServerConfig, nodeCreds, openLinkOps, writePrivateFile } from '@underlay/adapters';
import { NodeName, UnavailableError, UnderlayError, nodeToken } from '@underlay/core';
import { validate, UsageError, type ResolvedFlags } from '../flags.js';
import { upFlags } from '../specs/up.js';
import { guardProcess, serviceLog, takeLogSettings, untilSignal } from './run.js';

export { upFlags };

const port = z.coerce.number().int().min(1, 'must be a port number 1-65535').max(65535, 'must be a port number 1-65535');
// The agent's and controller's own rules (and defaults), so a bad value is refused before anything starts.
const UpArgs = z.object({
  stateDir: AgentConfig.shape.stateDir,
  node: NodeName.default(os.hostname().split('.')[0] || 'node1'),
  etcdPort: port.default(12379),
  natsPort: port.default(14222),
  listen: ControllerConfig.shape.listen,
  natsAuth: z.boolean().default(true),
  pluginDir: AgentConfig.shape.pluginDir,
  docker: AgentConfig.shape.docker,
});

function findOnPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin', '/sbin'])) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

function portFree(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

async function waitTcp(p: number, what: string, child: ChildProcess, logFile: string, timeoutMs = 30_000): Promise<void> {
  try {
    await retry(
      async () => {
        if (child.exitCode !== null) throw new UsageError(`${what} exited with code ${child.exitCode}; see ${logFile}`);
        const ok = await new Promise<boolean>((resolve) => {
          const s = net.connect(p, '127.0.0.1');
          s.once('connect', () => (s.destroy(), resolve(true)));
          s.once('error', () => resolve(false));
        });
        if (!ok) throw new UnavailableError(`${what} is not listening on port ${p} yet`);
      },
      {
        backoff: { minMs: 100, maxMs: 250 },
        retryIf: (e) => e instanceof UnderlayError && e.code === 'unavailable',
        deadline: Date.now() + timeoutMs,
        keepAlive: true,
      },
    );
  } catch (e) {
    if (e instanceof RetryExhausted) throw new UsageError(`${what} did not start listening on port ${p} within ${timeoutMs / 1000} s; see ${logFile}`);
    throw e;
  }
}

function startChild(cmd: string, args: string[], logFile: string): ChildProcess {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  // One deadline for this one stop (not a retry).
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

/**
 * The event stream's byte limit for the embedded NATS: the controller's default (1 GiB), or a quarter of the free
 * space where NATS keeps its data when that is less (nats-server refuses a stream larger than the storage it has:
 * a small disk or a tmpfs would otherwise stop `up`). At least 1 MiB, the lowest limit the controller takes.
 */
export function streamBytesFor(dir: string): number {
  let free = Infinity;
  try {
    const st = fs.statfsSync(dir);
    free = st.bavail * st.bsize;
  } catch {
    /* unknown: keep the default */
  }
  return Math.max(1024 ** 2, Math.min(DEFAULT_STREAM_LIMITS.maxBytes, Math.floor(free / 4)));
}

/**
 * The key store (made when missing), nats-server's configuration and this run's controller and node credentials,
 * all in `<stateDir>/nats/` (0700; files 0600).
 */
async function natsAuthFiles(stateDir: string, node: string, logger: (m: string) => void): Promise<{ config: string; controller: string; node: string }> {
  const { keys, created } = await ensureNatsKeys(stateDir).catch((e: unknown) => {
    throw e instanceof NatsKeysError ? new UsageError(`${e.message} (or run with --nats-auth=false)`) : e;
  });
  logger(created ? `NATS keys made in ${keys.dir} (as underlay creds init)` : `NATS keys from ${keys.dir}`);
  const files = {
    config: path.join(keys.dir, 'nats-server.conf'),
    controller: path.join(keys.dir, 'controller.creds'),
    node: path.join(keys.dir, `node-${nodeToken(node)}.creds`),
  };
  writePrivateFile(files.config, natsServerConfig(keys));
  writePrivateFile(files.controller, await controllerCreds(keys, 'controller'));
  writePrivateFile(files.node, await nodeCreds(keys, node));
  return files;
}

export async function upCommand(p: ResolvedFlags): Promise<number> {
  const values = { ...p.values };
  const logSettings = takeLogSettings(values);
  const a = validate(UpArgs, values, upFlags);
  const etcdBin = findOnPath('etcd');
  const natsBin = findOnPath('nats-server');
  const missing = [!etcdBin && 'etcd (Debian package etcd-server)', !natsBin && 'nats-server (Debian package nats-server)'].filter(Boolean);
  if (missing.length) {
    throw new UsageError(`underlay up needs ${missing.join(' and ')} on PATH. Install them with: apt-get install etcd-server nats-server`);
  }
  for (const [p, what] of [[a.etcdPort, '--etcd-port'], [a.etcdPort + 1, 'the etcd peer port (--etcd-port + 1)'], [a.natsPort, '--nats-port']] as const) {
    if (!(await portFree(p))) throw new UsageError(`port ${p} (${what}) is already in use on 127.0.0.1; choose another with ${what.startsWith('--') ? what : '--etcd-port'}`);
  }
  const logger = serviceLog(logSettings, 'underlay', 'up', a.node);
  // The controller and the agent run in this process: a stray rejection is logged and counted, never fatal.
  guardProcess(logger);
  const dirs = { etcd: path.join(a.stateDir, 'etcd'), nats: path.join(a.stateDir, 'nats'), agent: path.join(a.stateDir, 'agent'), logs: path.join(a.stateDir, 'logs') };
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true });
  // The controller's API token: made once (random, mode 0600) and kept with the rest of the state.
  const tokenFile = path.join(a.stateDir, 'api-token');
  const children: ChildProcess[] = [];
  let controller: Controller | undefined;
  let agent: Agent | undefined;
  const stopAll = async () => {
    await agent?.stop().catch((e) => logger(`agent: ${(e as Error).message}`));
    await controller?.stop().catch((e) => logger(`controller: ${(e as Error).message}`));
    await Promise.all(children.map(stopChild));
  };
  try {
    const etcdLog = path.join(dirs.logs, 'etcd.log');
    const etcd = startChild(etcdBin!, [
      '--name', 'underlay-up', '--data-dir', dirs.etcd,
      '--listen-client-urls', `http://127.0.0.1:${a.etcdPort}`, '--advertise-client-urls', `http://127.0.0.1:${a.etcdPort}`,
      '--listen-peer-urls', `http://127.0.0.1:${a.etcdPort + 1}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${a.etcdPort + 1}`,
      '--initial-cluster', `underlay-up=http://127.0.0.1:${a.etcdPort + 1}`, '--listen-metrics-urls', '',
    ], etcdLog);
    children.push(etcd);
    const natsLog = path.join(dirs.logs, 'nats.log');
    const auth = a.natsAuth ? await natsAuthFiles(a.stateDir, a.node, logger) : undefined;
    const nats = startChild(natsBin!, [...(auth ? ['-c', auth.config] : []), '-js', '-sd', dirs.nats, '-a', '127.0.0.1', '-p', String(a.natsPort)], natsLog);
    children.push(nats);
    await waitTcp(a.etcdPort, 'etcd', etcd, etcdLog);
    await waitTcp(a.natsPort, 'nats-server', nats, natsLog);
    const natsUrl = `nats://127.0.0.1:${a.natsPort}`;
    controller = new Controller(
      { etcd: [`http://127.0.0.1:${a.etcdPort}`], nats: natsUrl, natsCreds: auth?.controller, listen: a.listen, name: a.node, apiTokenFile: tokenFile, streamMaxBytes: streamBytesFor(dirs.nats) },
      logger.child('controller', a.node),
    );
    await controller.start();
    await controller.whenLeader();
    agent = new Agent({ node: a.node, nats: natsUrl, natsCreds: auth?.node, docker: a.docker, pluginDir: a.pluginDir, stateDir: dirs.agent }, () => openLinkOps(), logger.child(`agent ${a.node}`, a.node));
    await agent.start();
  } catch (e) {
    await stopAll();
    throw e;
  }
  process.stdout.write(
    [
      `underlay is up on node ${a.node}: plugin socket ${agent.socketPath}, controller API http://${a.listen} (token in ${tokenFile})`,
      'Next, for example:',
      '  docker network create -d underlay --ipam-driver underlay --subnet 192.0.2.0/24 --gateway 192.0.2.1 -o parent=eth0 net1',
      '  docker run --rm -it --network net1 busybox sh',
      'The underlay CLI, from another shell:',
      `  export UNDERLAY_CONTROLLER=http://${a.listen} UNDERLAY_TOKEN_FILE=${tokenFile}`,
      '  underlay network ls; underlay endpoint ls; underlay node ls; underlay ipam usage; underlay events --follow',
      a.natsAuth
        ? `NATS requires credentials (keys in ${path.join(a.stateDir, 'nats')}); another client's: underlay creds node NAME --state-dir ${a.stateDir} --out FILE`
        : 'NATS runs WITHOUT authentication (--nats-auth=false): any local process can act as any node.',
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  await untilSignal(stopAll, logger);
  return 0;
}
