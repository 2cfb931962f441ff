/**
 * The managed plugin's definition (deploy/plugin/config.json) and entrypoint (deploy/image/plugin-entrypoint.js):
 * the interfaces Docker reads (NetworkDriver, IpamDriver on underlay.sock), host network, NET_ADMIN and NET_RAW and
 * nothing more, the mounts an operator can point elsewhere, the settable options; and the entrypoint turning those
 * options into `underlay agent` flags (run with a stand-in for the CLI that prints its arguments). The plugin
 * itself, made and enabled in dockerd: test/e2e/managed-plugin.test.ts.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');
const config = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/plugin/config.json'), 'utf8')) as {
  entrypoint: string[];
  interface: { types: string[]; socket: string };
  network: { type: string };
  linux: { capabilities: string[] };
  mounts: { name: string; source: string; destination: string; settable?: string[] }[];
  env: { name: string; settable?: string[]; value: string }[];
  args: { settable: string[] };
};

describe('managed plugin config.json', () => {
  it('declares the network and IPAM drivers on underlay.sock, host network, NET_ADMIN and NET_RAW only', () => {
    expect(config.interface).toEqual({ types: ['docker.networkdriver/1.0', 'docker.ipamdriver/1.0'], socket: 'underlay.sock' });
    expect(config.network.type).toBe('host');
    expect(config.linux.capabilities.sort()).toEqual(['CAP_NET_ADMIN', 'CAP_NET_RAW']);
    expect(config.entrypoint).toEqual(['node', '/app/plugin-entrypoint.js']);
  });

  it('mounts the state directory, the credentials and the Docker socket, each settable', () => {
    const m = Object.fromEntries(config.mounts.map((x) => [x.name, x]));
    expect(m.state).toMatchObject({ destination: '/var/lib/underlay', settable: ['source'] });
    expect(m.etc).toMatchObject({ destination: '/etc/underlay', settable: ['source'] });
    expect(m.docker).toMatchObject({ destination: '/var/run/docker.sock', settable: ['source'] });
  });

  it('lets NODE, NATS_URL, NATS_CREDS, DRIVER_NAME, LOG_LEVEL and args be set', () => {
    for (const n of ['NODE', 'NATS_URL', 'NATS_CREDS', 'DRIVER_NAME', 'LOG_LEVEL']) expect(config.env.find((e) => e.name === n)?.settable).toEqual(['value']);
    expect(config.args.settable).toEqual(['value']);
  });
});

describe('plugin entrypoint', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-plugin-entry-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(path.join(ROOT, 'deploy/image/plugin-entrypoint.js'), path.join(dir, 'plugin-entrypoint.js'));
  fs.mkdirSync(path.join(dir, 'cli/dist'), { recursive: true });
  // Stand-in for the CLI: prints the arguments it was given.
  fs.writeFileSync(path.join(dir, 'cli/dist/main.js'), 'exports.main = async (argv) => { process.stdout.write(JSON.stringify(argv)); return 0; };\n');
  const creds = path.join(dir, 'node.creds');
  fs.writeFileSync(creds, 'x');
  const entry = (env: Record<string, string>, args: string[] = []) =>
    spawnSync(process.execPath, [path.join(dir, 'plugin-entrypoint.js'), ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8' });

  it('runs underlay agent with the flags its settings name, then the plugin args', () => {
    const r = entry({ NODE: 'h1', NATS_URL: 'nats://198.51.100.10:4222', NATS_CREDS: creds, DRIVER_NAME: 'underlay/underlay:0.1.0', LOG_LEVEL: 'debug' }, ['--bgp-asn', '65001']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(['agent', '--node', 'h1', '--nats', 'nats://198.51.100.10:4222', '--nats-creds', creds, '--driver-name', 'underlay/underlay:0.1.0', '--log-level', 'debug', '--bgp-asn', '65001']);
  });

  it('leaves out credentials that are not there, and refuses to start without NODE or NATS_URL', () => {
    const r = entry({ NODE: 'h1', NATS_URL: 'nats://n:4222', NATS_CREDS: path.join(dir, 'missing.creds') });
    expect(JSON.parse(r.stdout)).toEqual(['agent', '--node', 'h1', '--nats', 'nats://n:4222']);
    const noNode = entry({ NATS_URL: 'nats://n:4222' });
    expect(noNode.status).toBe(2);
    expect(noNode.stderr).toMatch(/set NODE/);
    const noNats = entry({ NODE: 'h1' });
    expect(noNats.status).toBe(2);
    expect(noNats.stderr).toMatch(/set NATS_URL/);
  });
});
