'use strict';
/**
 * Throw-away etcd and nats-server (JetStream) processes for benchmarks: own data directories under
 * a temp dir, free ports on 127.0.0.1, wait until healthy. Every process started here is tracked
 * by PID and stopped (SIGTERM, then SIGKILL) by stopAll(); killAllSync() is the last resort for
 * process 'exit'.
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');

/** @type {Set<import('node:child_process').ChildProcess>} */
const running = new Set();

function which(name, fallbacks) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {}
  }
  for (const p of fallbacks) if (fs.existsSync(p)) return p;
  throw new Error(`${name} not found on PATH`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function httpGet(url, timeoutMs) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tail(file, lines = 20) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function launch(bin, args, logFile) {
  const fd = fs.openSync(logFile, 'a');
  const proc = spawn(bin, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  running.add(proc);
  proc.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  proc.exited.then(() => running.delete(proc));
  proc.once('error', () => running.delete(proc));
  return proc;
}

async function waitHealthy(what, proc, logFile, check, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs;
  let dead = false;
  proc.exited.then(() => (dead = true));
  while (Date.now() < until) {
    if (dead) throw new Error(`${what} exited while starting:\n${tail(logFile)}`);
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`${what} not healthy after ${timeoutMs} ms:\n${tail(logFile)}`);
}

/** Stops one process by PID: SIGTERM, then SIGKILL after graceMs. */
async function stopProc(proc, graceMs = 5_000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  try {
    process.kill(proc.pid, 'SIGTERM');
  } catch {
    return;
  }
  const t = sleep(graceMs).then(() => 'timeout');
  if ((await Promise.race([proc.exited, t])) === 'timeout') {
    try {
      process.kill(proc.pid, 'SIGKILL');
    } catch {}
    await Promise.race([proc.exited, sleep(2_000)]);
  }
}

async function stopAll() {
  await Promise.all([...running].map((p) => stopProc(p)));
}

function killAllSync() {
  for (const p of running) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {}
  }
  running.clear();
}

async function startEtcd(dir) {
  const bin = which('etcd', ['/usr/bin/etcd']);
  fs.mkdirSync(dir, { recursive: true });
  const [port, peerPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${port}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const logFile = path.join(dir, 'etcd.log');
  const proc = launch(
    bin,
    [
      '--name', 'bench',
      '--data-dir', path.join(dir, 'data'),
      '--listen-client-urls', url,
      '--advertise-client-urls', url,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `bench=${peer}`,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', `bench-${process.pid}`,
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      '--log-level', 'warn',
    ],
    logFile,
  );
  try {
    await waitHealthy(`etcd (${url})`, proc, logFile, async () => {
      const r = await httpGet(`${url}/health`, 1_000);
      return r.status === 200 && /"health":\s*"true"/.test(r.body);
    });
  } catch (e) {
    await stopProc(proc, 1_000);
    throw e;
  }
  return { url, pid: proc.pid, proc, logFile, stop: () => stopProc(proc) };
}

async function startNats(dir) {
  const bin = which('nats-server', ['/usr/sbin/nats-server', '/usr/bin/nats-server']);
  fs.mkdirSync(path.join(dir, 'js'), { recursive: true });
  const [port, monitorPort] = [await freePort(), await freePort()];
  const url = `nats://127.0.0.1:${port}`;
  const logFile = path.join(dir, 'nats.log');
  const proc = launch(
    bin,
    ['-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort), '-js', '-sd', path.join(dir, 'js'), '--server_name', 'bench'],
    logFile,
  );
  try {
    await waitHealthy(`nats-server (${url})`, proc, logFile, async () => {
      const r = await httpGet(`http://127.0.0.1:${monitorPort}/healthz`, 1_000);
      return r.status === 200 && /"ok"/.test(r.body);
    });
  } catch (e) {
    await stopProc(proc, 1_000);
    throw e;
  }
  return { url, pid: proc.pid, proc, logFile, stop: () => stopProc(proc) };
}

module.exports = { startEtcd, startNats, stopAll, killAllSync, freePort, sleep };
