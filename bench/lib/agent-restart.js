'use strict';
/**
 * agent_restart_1k_ms (bench:scale): a real agent process (`underlay agent`) with ENDPOINTS endpoints, restarted, until
 * its plugin socket serves a call that needs its state (EndpointOperInfo of one of those endpoints: the start-up gate
 * holds such calls until start-up is done; Plugin.Activate and GetCapabilities are answered at once and say nothing).
 *
 * The agent runs in a network namespace of its own (it opens netlink and restores links: never in the root
 * namespace), with a veth `eth1` as the network's parent. Its Docker is a stand-in on a unix socket that answers what start-up
 * reads (GET /networks?filters=…, GET /networks/ID): one underlay network with ENDPOINTS containers. The first start
 * records them from Docker (the rebuild after lost state files); each measured start finds them in its state files,
 * reads Docker, restores links, then serves. NATS reaches the namespace through a unix socket (a socket file is seen
 * from every namespace): a forwarder in the namespace listens on its 127.0.0.1:4222 and pipes to the bench's unix
 * socket, which pipes to nats-server.
 */
const fs = require('node:fs');
const path = require('node:path');
const http = require('node:http');
const net = require('node:net');
const { spawn, execFileSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');

const ROOT = path.resolve(__dirname, '../..');
const ip = (args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A 64-hex-digit id, distinct for each i (i first, zero-padded, then zeros). */
const hex = (prefix, i) => `${prefix}${i.toString(16).padStart(8, '0')}`.padEnd(64, '0');

/** Docker's view of one underlay network with `n` containers (10.200.0.0/16, gateway .0.1). */
function dockerNetwork(n) {
  const containers = {};
  for (let i = 0; i < n; i++) {
    const a = i + 2;
    containers[hex('c', i)] = { Name: `c${i}`, EndpointID: hex('e', i), MacAddress: `02:42:0a:c8:${((a >> 8) & 255).toString(16).padStart(2, '0')}:${(a & 255).toString(16).padStart(2, '0')}`, IPv4Address: `10.200.${a >> 8}.${a & 255}/16`, IPv6Address: '' };
  }
  return {
    Name: 'scale',
    Id: hex('a', 1),
    Driver: 'underlay',
    EnableIPv6: false,
    Internal: false,
    IPAM: { Driver: 'underlay', Options: {}, Config: [{ Subnet: '10.200.0.0/16', Gateway: '10.200.0.1' }] },
    Options: { parent: 'eth1' },
    Labels: {},
    Containers: containers,
  };
}

/** The Docker stand-in: the network list and the network; 404 for anything else (counted). */
function startDocker(socket, network) {
  const other = new Map();
  const body = JSON.stringify(network);
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://docker');
    const send = (status, text) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(text);
    };
    if (req.method === 'GET' && /^(\/v[\d.]+)?\/networks$/.test(u.pathname)) return send(200, `[${body}]`);
    if (req.method === 'GET' && new RegExp(`^(/v[\\d.]+)?/networks/(${network.Id}|${network.Name})$`).test(u.pathname)) return send(200, body);
    other.set(`${req.method} ${u.pathname}`, (other.get(`${req.method} ${u.pathname}`) ?? 0) + 1);
    return send(404, JSON.stringify({ message: `not in the bench's Docker stand-in: ${req.method} ${u.pathname}` }));
  });
  return new Promise((resolve) => server.listen(socket, () => resolve({ server, other })));
}

/** nats-server reached through `socket` (the namespace's forwarder connects here). */
function startNatsPipe(socket, natsUrl) {
  const { hostname, port } = new URL(natsUrl);
  const server = net.createServer((c) => {
    const up = net.connect(Number(port), hostname);
    c.pipe(up).pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  return new Promise((resolve) => server.listen(socket, () => resolve(server)));
}

const FORWARDER = `
const net = require('node:net');
net.createServer((c) => { const up = net.connect(process.argv[1]); c.pipe(up).pipe(c); c.on('error', () => up.destroy()); up.on('error', () => c.destroy()); })
  .listen(4222, '127.0.0.1', () => process.stdout.write('ready\\n'));
`;

/** One plugin call over the unix socket; resolves with the HTTP status (rejects when the socket does not answer). */
function pluginCall(socket, method, body, ms) {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = http.request({ socketPath: socket, path: method, method: 'POST', timeout: ms, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy(new Error(`${method}: no answer within ${ms} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * Runs the measurement: `runs` restarts of an agent holding `endpoints` endpoints; resolves with the times (ms, spawn
 * until EndpointOperInfo answered 200) and what the agent's log says it restored.
 */
async function agentRestart({ dir, natsUrl, endpoints, runs, progress, spawnLogged, stopChild }) {
  const ns = `ulscale${process.pid}`;
  const sock = (n) => path.join(dir, n);
  const pluginDir = path.join(dir, 'plugins');
  const stateDir = path.join(dir, 'agent-state');
  fs.mkdirSync(pluginDir, { recursive: true });
  fs.mkdirSync(stateDir, { recursive: true });
  const network = dockerNetwork(endpoints);
  const docker = await startDocker(sock('docker.sock'), network);
  const natsPipe = await startNatsPipe(sock('nats.sock'), natsUrl);
  let forwarder;
  const cleanup = async () => {
    await stopChild(forwarder, 2_000).catch(() => undefined);
    docker.server.close();
    natsPipe.close();
    try {
      ip(['netns', 'del', ns]);
    } catch {
      /* already gone */
    }
  };
  try {
    ip(['netns', 'add', ns]);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    // The parent: a veth with its peer in the same namespace (this kernel may lack the dummy module).
    ip(['-n', ns, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p']);
    ip(['-n', ns, 'link', 'set', 'eth1', 'up']);
    ip(['-n', ns, 'link', 'set', 'eth1p', 'up']);
    forwarder = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', FORWARDER, sock('nats.sock')], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve, reject) => {
      forwarder.stdout.once('data', resolve);
      forwarder.once('exit', (c) => reject(new Error(`the NATS forwarder in ${ns} exited (${c})`)));
    });
    const agentArgs = [
      'netns', 'exec', ns, process.execPath, ...(process.env.BENCH_SCALE_AGENT_NODE_FLAGS ?? '').split(' ').filter(Boolean), path.join(ROOT, 'cli/bin/underlay.js'), 'agent',
      '--node', 'scale-agent', '--nats', 'nats://127.0.0.1:4222', '--docker', `unix://${sock('docker.sock')}`,
      '--plugin-dir', pluginDir, '--state-dir', stateDir, '--listen', 'off', '--no-routes',
      // The namespace has no address of its own to report (only lo and the veth parent).
      '--address', '198.51.100.250',
    ];
    const probe = { NetworkID: network.Id, EndpointID: hex('e', 0) };
    const socket = path.join(pluginDir, 'underlay.sock');
    /** Starts the agent; resolves with the ms until the plugin socket served a stateful call. */
    const startOnce = async (label) => {
      const logFile = path.join(dir, `agent-${label}.log`);
      fs.rmSync(socket, { force: true });
      const t0 = performance.now();
      const child = spawnLogged(agentArgs, logFile, 'ip');
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`agent (${label}) exited (${child.exitCode}); its log: ${logFile}`);
        if (Date.now() > deadline) throw new Error(`agent (${label}) did not serve ${socket} within 60 s; its log: ${logFile}`);
        if (fs.existsSync(socket)) {
          try {
            const status = await pluginCall(socket, '/NetworkDriver.EndpointOperInfo', probe, 30_000);
            if (status === 200) break;
            throw new Error(`agent (${label}): EndpointOperInfo answered ${status}; its log: ${logFile}`);
          } catch (e) {
            if (/answered/.test(e.message)) throw e;
            /* not listening yet */
          }
        }
        await sleep(5);
      }
      const ms = performance.now() - t0;
      return { child, ms, logFile };
    };
    // The first start records the endpoints from Docker (no state files yet); not measured.
    const first = await startOnce('first');
    await sleep(500);
    await stopChild(first.child, 10_000);
    const times = [];
    let restored;
    for (let i = 0; i < runs; i++) {
      const r = await startOnce(`restart-${i + 1}`);
      times.push(r.ms);
      restored = /restored (\d+) networks and (\d+) endpoints/.exec(fs.readFileSync(r.logFile, 'utf8'));
      await stopChild(r.child, 10_000);
      progress(`agent restart ${i + 1}/${runs}: ${r.ms.toFixed(0)} ms (${restored ? `restored ${restored[1]} networks, ${restored[2]} endpoints` : 'no "restored" line in its log'})`);
    }
    if (docker.other.size) progress(`Docker stand-in answered 404 to: ${[...docker.other].map(([k, v]) => `${k} ×${v}`).join(', ')}`);
    return { times, restoredEndpoints: restored ? Number(restored[2]) : NaN };
  } finally {
    await cleanup();
  }
}

module.exports = { agentRestart };
