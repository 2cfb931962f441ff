/**
 * What deploy/ runs `underlay` with parses with the CLI as it is, and its values pass the services' schemas:
 * - deploy/container-args.json (the image's and the Helm chart's arguments; test/unit/helm-chart.test.ts checks the
 *   chart uses exactly these), placeholders filled;
 * - each deploy/systemd unit's ExecStart with its env example as the environment: the lines it sets, and with every
 *   commented-out UNDERLAY_* line too (an operator uncomments them);
 * - the managed plugin's entrypoint (deploy/image/plugin-entrypoint.js) with deploy/plugin/config.json's env: the
 *   arguments it hands the CLI's main().
 * The command line goes through the real commander program (cli/src/program.ts, the CLI's command tree), with each
 * service command's run function replaced by one that records the layered values instead of starting anything; the
 * values are then validated as the command validates them (log flags, then the service's schema).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { z } from 'zod';
import { ControllerConfig } from '@underlay/controller';
import { AgentConfig } from '@underlay/node-agent';
import { commands, SECTIONS } from '../../cli/src/main';
import { buildProgram, CommandLineError, type CommandDef, type RunContext } from '../../cli/src/program';
import { validate, UsageError } from '../../cli/src/flags';
import { takeLogSettings } from '../../cli/src/commands/run';
import { agentFlags } from '../../cli/src/specs/agent';
import { controllerFlags } from '../../cli/src/specs/controller';

const ROOT = path.resolve(__dirname, '../..');
type Service = 'agent' | 'controller';
const SCHEMAS: Record<Service, { schema: z.ZodType; flags: typeof agentFlags }> = {
  agent: { schema: AgentConfig, flags: agentFlags },
  controller: { schema: ControllerConfig, flags: controllerFlags },
};

// An empty config file, so a /etc/underlay/config.yaml on the machine running the test does not count.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-deploy-args-'));
const emptyConfig = path.join(dir, 'config.yaml');
fs.writeFileSync(emptyConfig, '');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * Parses `argv` with the CLI's command tree in environment `env` (only it: process.env is replaced meanwhile);
 * the service command's validated config and log settings. Throws the CLI's usage error otherwise.
 */
async function parse(argv: string[], env: Record<string, string>): Promise<{ service: Service; config: Record<string, unknown>; log: unknown }> {
  let seen: { service: Service; ctx: RunContext } | undefined;
  const defs: CommandDef[] = commands.map((d) =>
    d.name === 'agent' || d.name === 'controller'
      ? {
          ...d,
          run: async (ctx: RunContext) => {
            seen = { service: d.name as Service, ctx };
            return 0;
          },
        }
      : d,
  );
  const saved = process.env;
  process.env = { UNDERLAY_CONFIG: emptyConfig, ...env };
  let code: number;
  try {
    code = await buildProgram(defs, { version: 'test', sections: SECTIONS, about: '' }).run(argv);
  } finally {
    process.env = saved;
  }
  if (code !== 0 || !seen) throw new Error(`${JSON.stringify(argv)}: exit code ${code}, ${seen ? 'ran' : 'no service command ran'}`);
  const values = { ...seen.ctx.values };
  const log = takeLogSettings(values);
  const { schema, flags } = SCHEMAS[seen.service];
  return { service: seen.service, config: validate(schema, values, flags) as Record<string, unknown>, log };
}

describe('deploy/container-args.json', () => {
  const args = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/container-args.json'), 'utf8')) as Record<Service, string[]>;
  const FILL: Record<string, string> = {
    '{{NODE}}': 'h1',
    '{{NAME}}': 'underlay-controller-0',
    '{{ETCD_ENDPOINTS}}': 'http://198.51.100.10:2379,http://198.51.100.11:2379',
    '{{NATS_URL}}': 'nats://198.51.100.10:4222',
  };
  const filled = (s: Service) => args[s].map((a) => FILL[a] ?? a);

  it('fills every placeholder', () => {
    for (const s of ['agent', 'controller'] as const) expect(filled(s).filter((a) => a.includes('{{'))).toEqual([]);
  });

  it('agent: parses, and the values are the ones given', async () => {
    const r = await parse(filled('agent'), {});
    expect(r.service).toBe('agent');
    expect(r.config).toMatchObject({ node: 'h1', nats: ['nats://198.51.100.10:4222'], natsCreds: '/etc/underlay/nats/node.creds', docker: 'unix:///var/run/docker.sock', pluginDir: '/run/docker/plugins', stateDir: '/var/lib/underlay', listen: '0.0.0.0:7411' });
  });

  it('controller: parses, and the values are the ones given', async () => {
    const r = await parse(filled('controller'), {});
    expect(r.service).toBe('controller');
    expect(r.config).toMatchObject({ name: 'underlay-controller-0', etcd: ['http://198.51.100.10:2379', 'http://198.51.100.11:2379'], nats: ['nats://198.51.100.10:4222'], natsCreds: '/etc/underlay/nats/controller.creds', listen: '0.0.0.0:7410', apiTokenFile: '/etc/underlay/api/tokens' });
  });

  it('a flag the CLI does not have is refused (the check can fail)', async () => {
    await expect(parse([...filled('agent'), '--plugin-directory', '/x'], {})).rejects.toThrow(CommandLineError);
    await expect(parse([...filled('controller'), '--lease-ttl', 'soon'], {})).rejects.toThrow(UsageError);
  });
});

describe('deploy/systemd units: ExecStart with the env example', () => {
  /** The unit's ExecStart words after the executable. */
  function execArgs(unit: string): string[] {
    const line = /^ExecStart=(.*)$/m.exec(fs.readFileSync(path.join(ROOT, 'deploy/systemd', unit), 'utf8'))?.[1];
    if (!line) throw new Error(`${unit}: no ExecStart`);
    const [exe, ...words] = line.trim().split(/\s+/);
    expect(exe).toBe('/usr/local/bin/underlay');
    return words;
  }
  /** The env file's UNDERLAY_* assignments; `all`: the commented-out ones as well. */
  function envOf(file: string, all: boolean): Record<string, string> {
    const text = fs.readFileSync(path.join(ROOT, 'deploy/systemd', file), 'utf8');
    const re = all ? /^#?(UNDERLAY_[A-Z0-9_]+)=(.*)$/gm : /^(UNDERLAY_[A-Z0-9_]+)=(.*)$/gm;
    return Object.fromEntries([...text.matchAll(re)].map((m) => [m[1]!, m[2]!.trim()]));
  }
  const cases: [Service, string, string][] = [
    ['agent', 'underlay-agent.service', 'agent.env.example'],
    ['controller', 'underlay-controller.service', 'controller.env.example'],
  ];

  it.each(cases)('%s: the lines the example sets', async (service, unit, env) => {
    const r = await parse(execArgs(unit), envOf(env, false));
    expect(r.service).toBe(service);
    expect(r.config).toMatchObject(service === 'agent' ? { node: 'h1', listen: '0.0.0.0:7411' } : { name: 'c1', apiTokenFile: '/etc/underlay/api/tokens' });
  });

  it.each(cases)('%s: every UNDERLAY_* line of the example, the commented ones too', async (service, unit, env) => {
    const vars = envOf(env, true);
    expect(Object.keys(vars).length).toBeGreaterThan(Object.keys(envOf(env, false)).length);
    const r = await parse(execArgs(unit), vars);
    expect(r.service).toBe(service);
    if (service === 'agent') expect(r.config).toMatchObject({ parentMap: { eth0: 'ens3', eth1: 'ens4' }, bgpApi: '127.0.0.1:50051' });
    else expect(r.config).toMatchObject({ etcdUser: 'underlay', tlsCert: '/etc/underlay/api/api.pem' });
  });

  it('a bad value in the environment is refused naming the variable (the check can fail)', async () => {
    await expect(parse(execArgs('underlay-agent.service'), { ...envOf('agent.env.example', false), UNDERLAY_REPORT_INTERVAL_MS: 'often' })).rejects.toThrow(/UNDERLAY_REPORT_INTERVAL_MS/);
  });
});

describe('managed plugin: the entrypoint\'s arguments with config.json\'s env', () => {
  const config = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/plugin/config.json'), 'utf8')) as { env: { name: string; value: string }[] };
  // The entrypoint, next to a stand-in cli/dist/main.js that prints what main() was given (as in plugin-config.test.ts).
  fs.copyFileSync(path.join(ROOT, 'deploy/image/plugin-entrypoint.js'), path.join(dir, 'plugin-entrypoint.js'));
  fs.mkdirSync(path.join(dir, 'cli/dist'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'cli/dist/main.js'), 'exports.main = async (argv) => { process.stdout.write(JSON.stringify(argv)); return 0; };\n');

  it('parses, with the settable values set as docker plugin set would', async () => {
    const env: Record<string, string> = { ...Object.fromEntries(config.env.map((e) => [e.name, e.value])), NODE: 'h1', NATS_URL: 'nats://198.51.100.10:4222' };
    const r = spawnSync(process.execPath, [path.join(dir, 'plugin-entrypoint.js'), '--bgp-asn', '65001'], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8' });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const argv = JSON.parse(r.stdout) as string[];
    expect(argv[0]).toBe('agent');
    const underlayEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('UNDERLAY_')));
    const p = await parse(argv, underlayEnv);
    expect(p.config).toMatchObject({ node: 'h1', nats: ['nats://198.51.100.10:4222'], driverName: 'underlay/underlay:latest', bgpAsn: 65001 });
    expect(p.log).toMatchObject({ logLevel: 'info' });
  });

  it('the real cli/dist/main.js exports main(argv) (what the entrypoint calls)', () => {
    const built = path.join(ROOT, 'cli/dist/main.js');
    // cli/dist exists after `npx tsc -b`; the image builds it the same way.
    const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(built)}).main(['agent','--help']).then((c)=>process.exit(c))`], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(r.stdout).toMatch(/^Usage: underlay agent/);
    expect(r.stdout).toContain('--address-hold-ms <MS>');
    expect(r.stdout).toContain('--driver-name <NAME>');
  });
});
