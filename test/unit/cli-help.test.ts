/**
 * `--help` and `-h` on every command and sub-command print that command's own help and exit 0, quickly,
 * starting nothing and asking for no required flag; `underlay` alone prints the short help (exit 2);
 * `--version`; a client command's help loads no etcd, NATS or netlink module; the agent loads no etcd or gRPC module.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { Command } from 'commander';
import { commandTree } from '../../cli/src/main';

const CLI = path.resolve(__dirname, '../../cli/bin/underlay.js');
const run = (args: string[]) => {
  const t = Date.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env.PATH ?? '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t };
};

function paths(c: Command, prefix: string[] = []): string[][] {
  return c.commands.filter((x) => x.name() !== 'help').flatMap((s) => [[...prefix, s.name()], ...paths(s, [...prefix, s.name()])]);
}

describe('help', () => {
  const all = paths(commandTree());
  it('covers every command', () => {
    expect(all.map((p) => p.join(' '))).toEqual(expect.arrayContaining(['up', 'controller', 'agent', 'creds init', 'network ls', 'network create', 'endpoint ls', 'node ls', 'ipam usage', 'events', 'trace', 'version', 'completion']));
  });

  it.each(['--help', '-h'])('%s on every command prints its own help, exit 0, nothing started', (flag) => {
    const seen = new Set<string>();
    for (const p of all) {
      const r = run([...p, flag]);
      expect({ p, code: r.code, stderr: r.stderr }).toEqual({ p, code: 0, stderr: '' });
      expect(r.stdout.split("\n")[0]).toMatch(new RegExp(`^Usage: underlay ${p.join(" ")}[| ]`));
      expect(seen.has(r.stdout)).toBe(false);
      seen.add(r.stdout);
      expect(r.stdout).not.toContain('is required');
    }
  });

  it('up --help exits at once without starting anything', () => {
    const r = run(['up', '--help']);
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(5_000);
    expect(r.stdout).not.toContain('underlay is up');
    expect(r.stdout).toContain('--etcd-port <PORT>');
  });

  it('controller --help does not ask for --etcd; shows only applied defaults', () => {
    const r = run(['controller', '--help']);
    expect(r.stdout).not.toMatch(/--etcd \(or UNDERLAY_ETCD\): is required/);
    expect(r.stdout).not.toContain('http://127.0.0.1:2379)');
    expect(r.stdout).toMatch(/--listen <HOST:PORT> +HTTP API address \(default:\s+"127\.0\.0\.1:7410"\)/);
    expect(r.stdout.replace(/\s+/g, ' ')).toMatch(/--etcd <URLS> etcd endpoints, comma-separated, e\.g\. http:\/\/127\.0\.0\.1:2379 \(required\)/);
  });

  it('network create --help differs from network --help', () => {
    expect(run(['network', 'create', '--help']).stdout).not.toBe(run(['network', '--help']).stdout);
    expect(run(['network', 'create', '--help']).stdout).toContain('--subnet <CIDR>');
    expect(run(['network', '--help']).stdout).not.toContain('--subnet');
  });

  it('underlay alone prints the short help (exit 2); --help is short too', () => {
    const r = run([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: underlay [--config FILE] COMMAND');
    const h = run(['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout.split('\n').length).toBeLessThan(40);
    expect(h.stdout).not.toContain('--plugin-dir');
  });

  it('--version prints the client version', () => {
    const pkg = require('../../cli/package.json') as { version: string };
    expect(run(['--version'])).toMatchObject({ code: 0, stdout: `underlay ${pkg.version}\n` });
    expect(run(['version', '--client'])).toMatchObject({ code: 0, stdout: `Client:     ${pkg.version}\n` });
  });

  it('usage errors exit 2 with the command named; a service\'s required flags only when it runs', () => {
    expect(run(['frob'])).toMatchObject({ code: 2, stderr: expect.stringContaining('unknown command "frob"') });
    expect(run(['agent', '--node', 'h1'])).toMatchObject({ code: 2, stderr: 'underlay agent: --nats (or UNDERLAY_NATS): is required\n' });
    expect(run(['controller', '--etcd-compact=maybe'])).toMatchObject({ code: 2 });
  });

  it('a client command loads no etcd, NATS or netlink code', () => {
    const probe = `const m=require(${JSON.stringify(path.resolve(__dirname, '../../cli/dist/main.js'))});m.main(['network','ls','--help']).then(()=>{const bad=Object.keys(require.cache).filter((k)=>/etcd3|[\\/]nats[\\/]|nats\\.js|netlink|@nats-io/.test(k));process.stderr.write(JSON.stringify(bad));});`;
    const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
    expect(r.stderr).toBe('[]');
  });

  it('the agent loads no etcd, gRPC, protobuf or pretty-printing code until it needs it (its start-up time, bench:scale)', () => {
    // The agent's modules, as `underlay agent` loads them; etcd3 alone was ~240 ms of every agent start.
    const probe = `require(${JSON.stringify(path.resolve(__dirname, '../../cli/dist/commands/agent.js'))});const bad=Object.keys(require.cache).filter((k)=>/etcd3|@grpc|protobufjs|pino-pretty|cockatiel/.test(k)).map((k)=>k.replace(/.*node_modules./,''));process.stderr.write(JSON.stringify(bad.slice(0,5)));`;
    const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
    expect(r.stderr).toBe('[]');
  });

  it('the controller loads no netlink code (it opens no netlink socket; ~35 ms of its cold start)', () => {
    const probe = `require(${JSON.stringify(path.resolve(__dirname, '../../cli/dist/commands/controller.js'))});const bad=Object.keys(require.cache).filter((k)=>/node_modules.netlink/.test(k)).map((k)=>k.replace(/.*node_modules./,''));process.stderr.write(JSON.stringify(bad.slice(0,5)));`;
    const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
    expect(r.stderr).toBe('[]');
  });
});
