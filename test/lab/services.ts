// Throw-away etcd and NATS (JetStream) servers on free ports.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { retry } from '@underlay/adapters';
import { UnderlayError } from '@underlay/core';
import { requireExecutable } from './run';
import { Proc, spawnLogged, stopProcess, tailFile } from './spawn';
import { waitFor } from './wait';
import { freePort, httpGet, tcpConnects } from './probes';
import { httpsGet } from './pki';

export interface ServiceOptions {
  /** Parent directory; the service gets its own sub-directory `<dir>/<name>` for data and log. */
  dir: string;
  /**
   * Address to listen on. Default 127.0.0.1. Use the lab bridge address
   * (198.51.100.254) so processes inside host namespaces can reach it, or
   * 0.0.0.0 for everything.
   */
  host?: string;
  /** Unique name (default `<kind>-<random>`). */
  name?: string;
  /** How long to wait until the service is healthy. Default 30 s. */
  timeoutMs?: number;
}

export interface Service {
  name: string;
  /** Client URL, e.g. http://198.51.100.254:40123 (etcd) or nats://198.51.100.254:40124. For host 0.0.0.0 it uses 127.0.0.1. */
  url: string;
  /** The address it listens on, as given. */
  host: string;
  port: number;
  pid: number;
  proc: Proc;
  /** The service's own directory (data + log). */
  dir: string;
  logFile: string;
  /** Stops the server (SIGTERM, then SIGKILL). Idempotent. Data directory stays until the lab dir is removed. */
  stop(): Promise<void>;
}

export interface EtcdService extends Service {
  /** Same as url; etcd client endpoint. */
  endpoint: string;
  /** With `tls`: the client files to reach it (CA, and a client certificate of the same CA). */
  tls?: EtcdTls;
}

/**
 * Client TLS for etcd (test/lab/pki.ts makes the files): etcd serves https:// with the server certificate and
 * requires a client certificate signed by the CA (`--client-cert-auth`); the client files are used for its health
 * check and handed back for tests.
 */
export interface EtcdTls {
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
}

export interface EtcdOptions extends ServiceOptions {
  tls?: EtcdTls;
}

export interface NatsOptions extends ServiceOptions {
  /**
   * nats-server configuration text (e.g. `underlay creds nats-config`'s operator, system account and resolver),
   * written to `<dir>/nats.conf` and given with `-c`; the command line still sets listen, monitor and JetStream.
   * Default: none (no authentication).
   */
  config?: string;
}

export interface NatsService extends Service {
  /** HTTP monitoring endpoint, e.g. http://198.51.100.254:40125 (serves /healthz, /varz, /jsz). */
  monitorUrl: string;
  monitorPort: number;
  /** The configuration file given with `-c`, when `config` was. */
  configFile?: string;
}

export function clientHost(host: string): string {
  return host === '0.0.0.0' ? '127.0.0.1' : host;
}

function randomName(kind: string): string {
  return `${kind}-${crypto.randomBytes(3).toString('hex')}`;
}

/**
 * A server that exited because a port that was free a moment ago got taken
 * (bind-then-close is inherently racy). The child's log is its only account of
 * why it failed, so its text is read here, once, and turned into a code.
 */
export function portTakenOr(e: unknown, ...logFiles: string[]): unknown {
  if (!logFiles.some((f) => /address already in use|EADDRINUSE|bind:/i.test(tailFile(f, 40)))) return e;
  return new UnderlayError('conflict', `a port was taken before the server could bind it: ${(e as Error).message}`, { retriable: true, cause: e });
}

/** Up to three start attempts, each on fresh ports, while the failure is a port taken (portTakenOr). */
export function withPortRetry<T>(attempt: (n: number) => Promise<T>, tries = 3): Promise<T> {
  return retry((n) => attempt(n - 1), {
    backoff: { minMs: 0, maxMs: 0 }, // new ports: nothing to wait for
    retryIf: (e, n) => n < tries && e instanceof UnderlayError && e.code === 'conflict',
  });
}

/** Starts a single-member etcd (with `tls`: https and client certificates); resolves when GET /health says {"health":"true"}. */
export async function startEtcd(opts: EtcdOptions): Promise<EtcdService> {
  const bin = requireExecutable('etcd', 'install the Debian package etcd-server');
  const host = opts.host ?? '127.0.0.1';
  const name = opts.name ?? randomName('etcd');
  const dir = path.join(opts.dir, name);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return withPortRetry(async (n) => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const port = await freePort(clientHost(host) === '127.0.0.1' ? '127.0.0.1' : host);
    const peerPort = await freePort('127.0.0.1');
    const scheme = opts.tls ? 'https' : 'http';
    const url = `${scheme}://${clientHost(host)}:${port}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const logFile = path.join(dir, `etcd${n ? `.${n}` : ''}.log`);
    const t = opts.tls;
    const tlsArgs = t ? ['--cert-file', t.serverCertFile, '--key-file', t.serverKeyFile, '--trusted-ca-file', t.caFile, '--client-cert-auth'] : [];
    const clientTls = t ? { ca: fs.readFileSync(t.caFile), cert: fs.readFileSync(t.clientCertFile), key: fs.readFileSync(t.clientKeyFile) } : undefined;
    const proc = spawnLogged(
      bin,
      [
        '--name', name,
        '--data-dir', path.join(dir, 'data'),
        '--listen-client-urls', `${scheme}://${host}:${port}`,
        '--advertise-client-urls', url,
        '--listen-peer-urls', peerUrl,
        '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', `${name}=${peerUrl}`,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', name,
        '--logger', 'zap',
        '--log-outputs', 'stderr',
        ...tlsArgs,
      ],
      { name, logFile },
    );
    try {
      await waitFor(
        async () => {
          const r = clientTls ? await httpsGet(`${url}/health`, clientTls, 1_000) : await httpGet(`${url}/health`, 1_000);
          return r.status === 200 && (JSON.parse(r.body) as { health?: string }).health === 'true';
        },
        { timeoutMs, what: `etcd ${name} at ${url}/health to report {"health":"true"}`, proc, intervalMs: 100 },
      );
    } catch (e) {
      await stopProcess(proc, 'SIGKILL', 1_000).catch(() => undefined);
      throw portTakenOr(e, logFile);
    }
    let stopping: Promise<void> | undefined;
    return {
      name,
      url,
      endpoint: url,
      host,
      port,
      pid: proc.pid,
      proc,
      dir,
      logFile,
      tls: opts.tls,
      // SIGCONT first: a test may have paused it (SIGSTOP), and a stopped process does not act on SIGTERM.
      stop: () => (stopping ??= (continueProcess(proc.pid), stopProcess(proc, 'SIGTERM', 5_000))),
    };
  });
}

function continueProcess(pid: number): void {
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    /* gone already */
  }
}

/**
 * Starts nats-server with JetStream; resolves when the client port accepts and /healthz says ok. With `config`
 * (authentication, for example) that text is its configuration file.
 */
export async function startNats(opts: NatsOptions): Promise<NatsService> {
  const bin = requireExecutable('nats-server', 'install the Debian package nats-server');
  const host = opts.host ?? '127.0.0.1';
  const name = opts.name ?? randomName('nats');
  const dir = path.join(opts.dir, name);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return withPortRetry(async (n) => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(path.join(dir, 'js'), { recursive: true });
    const configFile = opts.config === undefined ? undefined : path.join(dir, 'nats.conf');
    if (configFile) fs.writeFileSync(configFile, opts.config!, { mode: 0o600 });
    const bindProbe = clientHost(host) === '127.0.0.1' ? '127.0.0.1' : host;
    const port = await freePort(bindProbe);
    const monitorPort = await freePort(bindProbe);
    const ch = clientHost(host);
    const url = `nats://${ch}:${port}`;
    const monitorUrl = `http://${ch}:${monitorPort}`;
    const logFile = path.join(dir, `nats${n ? `.${n}` : ''}.log`);
    // The monitoring listener binds to the same address as the client listener (-a).
    const proc = spawnLogged(
      bin,
      [
        ...(configFile ? ['-c', configFile] : []),
        '-a', host, '-p', String(port), '-m', String(monitorPort), '-js', '-sd', path.join(dir, 'js'), '--server_name', name,
      ],
      { name, logFile },
    );
    try {
      await waitFor(
        async () => {
          if (!(await tcpConnects(ch, port, 1_000))) return false;
          const r = await httpGet(`${monitorUrl}/healthz`, 1_000);
          return r.status === 200 && /"ok"/.test(r.body);
        },
        { timeoutMs, what: `nats ${name} at ${url} (monitor ${monitorUrl}/healthz) to be ready`, proc, intervalMs: 100 },
      );
    } catch (e) {
      await stopProcess(proc, 'SIGKILL', 1_000).catch(() => undefined);
      throw portTakenOr(e, logFile);
    }
    let stopping: Promise<void> | undefined;
    return {
      name,
      url,
      host,
      port,
      monitorUrl,
      monitorPort,
      ...(configFile ? { configFile } : {}),
      pid: proc.pid,
      proc,
      dir,
      logFile,
      stop: () => (stopping ??= stopProcess(proc, 'SIGTERM', 5_000)),
    };
  });
}
