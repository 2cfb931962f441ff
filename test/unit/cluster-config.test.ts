/**
 * Several etcd endpoints and NATS servers, and the event stream's replicas, as the controller and the agent take them:
 * `--etcd a,b,c`, `--nats x,y,z` (a list flag, or UNDERLAY_NATS with commas; a config object may give one string with
 * commas or a list), `--events-replicas N` (1 to 5, default 1). Run against a real cluster in
 * test/integration/clustered.test.ts.
 */
import { ControllerConfig } from '@underlay/controller';
import { AgentConfig } from '@underlay/node-agent';
import { natsServers } from '@underlay/adapters';
import { controllerFlags } from '../../cli/src/commands/controller';
import { agentFlags } from '../../cli/src/commands/agent';
import { UsageError, parseFlags, validate } from '../../cli/src/flags';

const E = ['http://127.0.0.1:2379', 'http://127.0.0.1:22379', 'http://127.0.0.1:32379'];
const N = ['nats://127.0.0.1:4222', 'nats://127.0.0.1:4223', 'nats://127.0.0.1:4224'];

describe('clustered etcd and NATS settings', () => {
  it('the controller takes every etcd member, every NATS server and the replicas from its flags', () => {
    const { values } = parseFlags(['--etcd', E.join(','), '--nats', N.join(','), '--events-replicas', '3'], controllerFlags, {});
    const c = validate(ControllerConfig, values, controllerFlags);
    expect(c.etcd).toEqual(E);
    expect(c.nats).toEqual(N);
    expect(c.eventsReplicas).toBe(3);
  });

  it('UNDERLAY_NATS with commas is the same list; one server and the default single replica still work', () => {
    const { values } = parseFlags([], controllerFlags, { UNDERLAY_ETCD: E[0], UNDERLAY_NATS: N.join(',') });
    expect(validate(ControllerConfig, values, controllerFlags).nats).toEqual(N);
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

  it('the agent takes every NATS server from its flag', () => {
    const { values } = parseFlags(['--node', 'h1', '--nats', N.join(',')], agentFlags, {});
    expect(validate(AgentConfig, values, agentFlags).nats).toEqual(N);
  });

  it('refuses no server, a server with blanks inside, and replicas outside 1 to 5, naming the flag', () => {
    const refusal = (argv: string[], flags = controllerFlags, schema: typeof ControllerConfig | typeof AgentConfig = ControllerConfig) => {
      try {
        validate(schema, parseFlags(argv, flags, {}).values, flags);
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return (e as Error).message;
      }
      throw new Error(`accepted ${argv.join(' ')}`);
    };
    expect(refusal(['--etcd', E[0]!, '--nats', ','])).toBe('--nats (or UNDERLAY_NATS): at least one NATS server is needed');
    expect(refusal(['--etcd', E[0]!, '--nats', 'nats://a b:4222'])).toBe('--nats (or UNDERLAY_NATS): each NATS server is a URL such as nats://127.0.0.1:4222');
    expect(refusal(['--etcd', E[0]!, '--nats', N[0]!, '--events-replicas', '0'])).toBe('--events-replicas (or UNDERLAY_EVENTS_REPLICAS): --events-replicas must be 1 to 5');
    expect(refusal(['--etcd', E[0]!, '--nats', N[0]!, '--events-replicas', '6'])).toBe('--events-replicas (or UNDERLAY_EVENTS_REPLICAS): --events-replicas must be 1 to 5');
    expect(refusal(['--etcd', E[0]!, '--nats', N[0]!, '--events-replicas', '2.5'])).toBe('--events-replicas (or UNDERLAY_EVENTS_REPLICAS): --events-replicas must be a whole number');
    expect(refusal(['--node', 'h1', '--nats', ''], agentFlags, AgentConfig)).toMatch(/^--nats \(or UNDERLAY_NATS\): /);
  });
});
