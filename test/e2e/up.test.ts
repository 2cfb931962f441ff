/**
 * `underlay up`, the embedded single-host stack, run as a real process inside a lab host: it starts
 * etcd, nats-server, a controller and an agent, answers Plugin.Activate on its socket, and on
 * SIGTERM exits 0 leaving no process behind. NATS requires credentials by default (keys made in
 * `<state-dir>/nats`, 0600/0700; an anonymous client is refused, the agent's creds file works);
 * `--nats-auth=false` runs it without users.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { descendantsOf, isAlive, waitFor, withLab } from '../lab';
import { CLI, ROOT, ensureBuilt, pluginPost } from './support/cluster';

jest.setTimeout(180_000);
const ctx = withLab({ hosts: ['h1'], features: ['lab', 'etcd', 'nats'] });

describe('underlay up', () => {
  beforeAll(() => ensureBuilt(), 180_000);

  it('comes up, answers Plugin.Activate, and on SIGTERM exits leaving no process behind', async () => {
    const lab = ctx.lab;
    const stateDir = path.join(lab.dir, 'up');
    const pluginDir = path.join(lab.dir, 'up-plugins');
    // A stale socket file from an earlier run must not stop the agent.
    fs.mkdirSync(pluginDir, { recursive: true });
    fs.writeFileSync(path.join(pluginDir, 'underlay.sock'), 'stale');
    const proc = lab.spawnIn('h1', process.execPath, [
      CLI, 'up', '--state-dir', stateDir, '--plugin-dir', pluginDir, '--node', 'h1',
      '--etcd-port', '32379', '--nats-port', '34222', '--listen', '127.0.0.1:37410',
    ], { name: 'up' });
    const sock = path.join(pluginDir, 'underlay.sock');
    await waitFor(() => fs.readFileSync(proc.logFile, 'utf8').includes('underlay is up'), { timeoutMs: 60_000, what: 'underlay up to print its next steps' });
    const out = fs.readFileSync(proc.logFile, 'utf8');
    expect(out).toContain('docker network create -d underlay --ipam-driver underlay');
    expect(await pluginPost(sock, '/Plugin.Activate')).toEqual({ Implements: ['NetworkDriver', 'IpamDriver', 'authz'] });

    // `underlay events` prints the log: the agent registered its node on start.
    await waitFor(async () => (await lab.exec('h1', process.execPath, [CLI, 'events', '--controller', 'http://127.0.0.1:37410', '--token-file', path.join(stateDir, 'api-token')])).stdout.includes('NodeRegistered'), {
      timeoutMs: 10_000,
      what: 'underlay events to list the NodeRegistered event',
    });
    const json = await lab.execOk('h1', process.execPath, [CLI, 'events', '--controller', 'http://127.0.0.1:37410', '--token-file', path.join(stateDir, 'api-token'), '--json']);
    const first = JSON.parse(json.split('\n')[0]!) as { seq: number; type: string; actor: string };
    expect(first).toMatchObject({ seq: 1, type: 'NodeRegistered', actor: 'node:h1' });
    const down = await lab.exec('h1', process.execPath, [CLI, 'events', '--controller', 'http://127.0.0.1:9']);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach the controller at http://127.0.0.1:9');
    // Without the token the API refuses.
    const noToken = await lab.exec('h1', process.execPath, [CLI, 'events', '--controller', 'http://127.0.0.1:37410', '--token', 'x'.repeat(20)]);
    expect(noToken.code).toBe(1);

    // NATS requires credentials (on by default): anonymous clients are refused, the agent's own creds file works.
    const natsDir = path.join(stateDir, 'nats');
    expect(fs.statSync(natsDir).mode & 0o777).toBe(0o700);
    for (const f of ['operator.nk', 'account.nk', 'account-signing.nk', 'nats-server.conf', 'controller.creds', 'node-h1.creds']) {
      expect([f, fs.statSync(path.join(natsDir, f)).mode & 0o777]).toEqual([f, 0o600]);
    }
    const tryNats = (opts: object) =>
      lab.exec('h1', process.execPath, [
        '-e',
        `require(${JSON.stringify(path.join(ROOT, 'libs/adapters/dist/index.js'))}).connectNats('nats://127.0.0.1:34222', 'probe', ${JSON.stringify(opts)})` +
          `.then((nc) => nc.close().then(() => console.log('connected')), (e) => console.log(String(e)))`,
      ]);
    expect((await tryNats({})).stdout).toMatch(/authorization/i);
    expect((await tryNats({ creds: path.join(natsDir, 'node-h1.creds'), inboxPrefix: '_UL_INBOX.h1' })).stdout.trim()).toBe('connected');

    const children = descendantsOf(proc.pid);
    const names = children.map((c) => c.comm);
    expect(names).toEqual(expect.arrayContaining(['etcd', 'nats-server']));

    process.kill(proc.pid, 'SIGTERM');
    const exit = await proc.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    await waitFor(() => children.every((c) => !isAlive(c.pid)), { timeoutMs: 15_000, what: 'etcd and nats-server to exit' });
    expect(fs.existsSync(sock)).toBe(false);
  });

  it('--nats-auth=false runs NATS without users, as before', async () => {
    const lab = ctx.lab;
    const stateDir = path.join(lab.dir, 'up-noauth');
    const pluginDir = path.join(lab.dir, 'up-noauth-plugins');
    const proc = lab.spawnIn('h1', process.execPath, [
      CLI, 'up', '--nats-auth=false', '--state-dir', stateDir, '--plugin-dir', pluginDir, '--node', 'h1',
      '--etcd-port', '32389', '--nats-port', '34232', '--listen', '127.0.0.1:37420',
    ], { name: 'up-noauth' });
    try {
      await waitFor(() => fs.readFileSync(proc.logFile, 'utf8').includes('underlay is up'), { timeoutMs: 60_000, what: 'underlay up --nats-auth=false to start' });
      expect(fs.readFileSync(proc.logFile, 'utf8')).toContain('NATS runs WITHOUT authentication');
      expect(fs.existsSync(path.join(stateDir, 'nats', 'operator.nk'))).toBe(false);
      const r = await lab.exec('h1', process.execPath, [
        '-e',
        `require(${JSON.stringify(path.join(ROOT, 'libs/adapters/dist/index.js'))}).connectNats('nats://127.0.0.1:34232', 'probe')` +
          `.then((nc) => nc.close().then(() => console.log('connected')), (e) => console.log(String(e)))`,
      ]);
      expect(r.stdout.trim()).toBe('connected');
    } finally {
      if (isAlive(proc.pid)) process.kill(proc.pid, 'SIGTERM');
    }
    expect(await proc.exited).toEqual({ code: 0, signal: null });
  });

  it('refuses a bad flag value naming the flag', async () => {
    const r = await ctx.lab.exec('h1', process.execPath, [CLI, 'up', '--etcd-port', 'http']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--etcd-port (or UNDERLAY_ETCD_PORT)');
  });
});
