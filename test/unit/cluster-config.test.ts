/**
 * Several etcd endpoints and NATS servers, and the event stream's replicas, as the controller and the agent take them:
 * `--etcd a,b,c`, `--nats x,y,z` (a list flag, or UNDERLAY_NATS with commas; a config object may give one string with
 * commas or a list), `--events-replicas N` (1 to 5, default 1). Run against a real cluster in
 * test/integration/clustered.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { z } from 'zod';
import { ControllerConfig } from '@underlay/controller';
import { AgentConfig } from '@underlay/node-agent';
import { natsServers } from '@underlay/adapters';
import { commands, SECTIONS } from '../../cli/src/main';
import { buildProgram, type CommandDef, type RunContext } from '../../cli/src/program';
import { UsageError, validate } from '../../cli/src/flags';
import { takeLogSettings } from '../../cli/src/commands/run';
import { controllerFlags } from '../../cli/src/specs/controller';
import { agentFlags } from '../../cli/src/specs/agent';

const E = ['http://127.0.0.1:2379', 'http://127.0.0.1:22379', 'http://127.0.0.1:32379'];
const N = ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223', 'nats://127.0.0.1:4224'];

// An empty config file, so a /etc/underlay/config.yaml on the machine running the test does not count.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-cluster-config-'));
const emptyConfig = path.join(dir, 'config.yaml');
fs.writeFileSync(emptyConfig, '');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** `argv` through the CLI's command tree (the service command records its values instead of starting), validated as it validates them. */
async function parse(argv: string[], env: Record<string, string> = {}): Promise<Record<string, unknown>> {
  let seen: { name: string; ctx: RunContext } | undefined;
  const defs: CommandDef[] = commands.map((d) => (d.name === 'agent' || d.name === 'controller' ? { ...d, run: async (ctx: RunContext) => ((seen = { name: d.name, ctx }), 0) } : d));
  const saved = process.env;
  process.env = { UNDERLAY_CONFIG: emptyConfig, ...env };
  try {
    const code = await buildProgram(defs, { version: 'test', sections: SECTIONS, about: '' }).run(argv);
    if (code !== 0 || !seen) throw new Error(`${JSON.stringify(argv)}: exit code ${code}`);
  } finally {
    process.env = saved;
  }
  const values = { ...seen.ctx.values };
  takeLogSettings(values);
  const [schema, flags] = seen.name === 'agent' ? [AgentConfig as z.ZodType, agentFlags] : [ControllerConfig as z.ZodType, controllerFlags];
  return validate(schema, values, flags) as Record<string, unknown>;
}

describe('clustered etcd and NATS settings', () => {
  it('the controller takes every etcd member, every NATS server and the replicas from its flags', async () => {
    const c = await parse(['controller', '--etcd', E.join(','), '--nats', N.join(','), '--events-replicas', '3']);
    expect(c.etcd).toEqual(E);
    expect(c.nats).toEqual(N);
    expect(c.eventsReplicas).toBe(3);
  });

  it('UNDERLAY_NATS with commas is the same list; one server and the default single replica still work', async () => {
    expect((await parse(['controller'], { UNDERLAY_ETCD: E[0]!, UNDERLAY_NATS: N.join(',') })).nats).toEqual(N);
    const one = ControllerConfig.parse({ etcd: [E[0]], nats: N[0] });
    expect(one.nats).toEqual([N[0]]);
    expect(one.eventsReplicas).toBe(1);
  });

  it('a config object may give the servers as one string with commas or as a list (blanks dropped)', () => {
    expect(ControllerConfig.parse({ etcd: E, nats: ` ${N[0]}, ${N[1]},,` }).nats).toEqual([N[0], N[1]]);
    expect(AgentConfig.parse({ node: 'h1', nats: N }).nats).toEqual(N);
    expect(AgentConfig.parse({ node: 'h1', nats: N.join(',') }).nats).toEqual(N);
    expect(natsServers(N.join(' , '))).toEqual(N);
  });

  it('the agent takes --address-hold-ms 0 (released at once) from its flag and its environment, as its help says', async () => {
    expect((await parse(['agent', '--node', 'h1', '--nats', N[0]!, '--address-hold-ms', '0'])).addressHoldMs).toBe(0);
    expect(AgentConfig.parse({ node: 'h1', nats: N, addressHoldMs: '0' }).addressHoldMs).toBe(0);
    expect(AgentConfig.parse({ node: 'h1', nats: N, addressHoldMs: '250' }).addressHoldMs).toBe(250);
    expect(AgentConfig.safeParse({ node: 'h1', nats: N, addressHoldMs: '50' }).success).toBe(false);
  });

  it('the agent takes every NATS server from its flag', async () => {
    expect((await parse(['agent', '--node', 'h1', '--nats', N.join(',')])).nats).toEqual(N);
  });

  it('refuses no server, a server with blanks inside, and replicas outside 1 to 5, naming the flag', async () => {
    const refusal = async (argv: string[]) => {
      try {
        await parse(argv);
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return (e as Error).message;
      }
      throw new Error(`accepted ${argv.join(' ')}`);
    };
    const ctl = ['controller', '--etcd', E[0]!];
    expect(await refusal([...ctl, '--nats', ','])).toBe('--nats (or UNDERLAY_NATS): at least one NATS server is needed');
    expect(await refusal([...ctl, '--nats', 'nats://a b:4222'])).toBe('--nats (or UNDERLAY_NATS): each NATS server is a URL such as nats://127.0.0.1:4222');
    expect(await refusal([...ctl, '--nats', N[0]!, '--events-replicas', '0'])).toBe('--events-replicas (or UNDERLAY_EVENTS_REPLICAS): --events-replicas must be 1 to 5');
    expect(await refusal([...ctl, '--nats', N[0]!, '--events-replicas', '6'])).toBe('--events-replicas (or UNDERLAY_EVENTS_REPLICAS): --events-replicas must be 1 to 5');
    expect(await refusal([...ctl, '--nats', N[0]!, '--events-replicas', '2.5'])).toBe('--events-replicas (or UNDERLAY_EVENTS_REPLICAS): --events-replicas must be a whole number');
    expect(await refusal(['agent', '--node', 'h1', '--nats', ','])).toBe('--nats (or UNDERLAY_NATS): at least one NATS server is needed');
  });
});
