/** The `underlay` command line. */
import { UnderlayError } from '@underlay/core';
import { UsageError, helpFor } from './flags.js';
import { ClientError, clientFlags } from './client.js';
import type { FlagSpec } from './flags.js';
import { endpointCommand, endpointUsage } from './commands/endpoint.js';
import { eventsCommand, eventsUsage } from './commands/events.js';
import { ipamCommand, ipamUsageText } from './commands/ipam.js';
import { networkCommand, networkCreateFlags, networkUsage } from './commands/network.js';
import { nodeCommand, nodeUsage } from './commands/node.js';
import { traceCommand, traceUsage } from './commands/trace.js';

interface ServiceCommand {
  about: string;
  load(): Promise<{ run: (argv: string[]) => Promise<number>; flags: FlagSpec[] }>;
}

/**
 * Long-running services, loaded only when run (or for the help): the commands that talk to a controller
 * need neither the etcd, NATS and netlink modules nor the time to load them.
 */
const services: Record<string, ServiceCommand> = {
  up: { about: 'start etcd, NATS, a controller and an agent on this host', load: () => import('./commands/up.js').then((m) => ({ run: m.upCommand, flags: m.upFlags })) },
  controller: { about: 'run a controller', load: () => import('./commands/controller.js').then((m) => ({ run: m.controllerCommand, flags: m.controllerFlags })) },
  agent: { about: 'run the node agent (the Docker plugin)', load: () => import('./commands/agent.js').then((m) => ({ run: m.agentCommand, flags: m.agentFlags })) },
  creds: { about: 'NATS identities: creds init | node NAME | controller NAME | nats-config', load: () => import('./commands/creds.js').then((m) => ({ run: m.credsCommand, flags: m.credsFlags })) },
};

/** Commands that talk to a controller's HTTP API. */
const clients = {
  network: { run: networkCommand, about: 'cluster networks: ls, inspect, create, rm', usage: networkUsage },
  endpoint: { run: endpointCommand, about: 'endpoint addresses: ls', usage: endpointUsage },
  node: { run: nodeCommand, about: 'nodes: ls', usage: nodeUsage },
  ipam: { run: ipamCommand, about: 'address use: usage', usage: ipamUsageText },
  events: { run: eventsCommand, about: 'print (or --follow) the cluster event log', usage: eventsUsage },
  trace: { run: traceCommand, about: 'print the events of one trace (a TRACE id of events) from the log', usage: traceUsage },
} as const;

const commands: Record<string, { run: (argv: string[]) => Promise<number> }> = {
  ...Object.fromEntries(Object.entries(services).map(([name, s]) => [name, { run: async (argv: string[]) => (await s.load()).run(argv) }])),
  ...clients,
};

export async function usage(): Promise<string> {
  const lines = ['usage: underlay COMMAND [flags]', '', 'commands:'];
  for (const [name, c] of [...Object.entries(services), ...Object.entries(clients)]) lines.push(`  ${name.padEnd(12)}${c.about}`);
  for (const [name, c] of Object.entries(services)) lines.push('', `underlay ${name}:`, helpFor((await c.load()).flags));
  lines.push('', 'Talking to a controller:');
  for (const c of Object.values(clients)) lines.push(...c.usage.split('\n').map((l) => `  ${l}`));
  lines.push('', 'flags of every command that talks to a controller:', helpFor(clientFlags));
  lines.push('', 'underlay network create (as docker network create):', helpFor(networkCreateFlags));
  lines.push('', 'Every flag can also be set as an environment variable: --plugin-dir is UNDERLAY_PLUGIN_DIR, --token-file UNDERLAY_TOKEN_FILE.');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(`${await usage()}\n`);
    return cmd ? 0 : 2;
  }
  const c = commands[cmd];
  if (!c) {
    process.stderr.write(`underlay: unknown command ${JSON.stringify(cmd)}\n\n${await usage().catch(() => 'underlay --help lists the commands')}\n`);
    return 2;
  }
  try {
    return await c.run(rest);
  } catch (e) {
    if (e instanceof ClientError) {
      process.stderr.write(`underlay: ${e.message}\n`);
      return 1;
    }
    // Exit 2 for usage: a bad flag, argument or configuration file. Any other error of the one model (etcd
    // unreachable, Docker or the kernel refusing) is its message and exit 1; anything else a bug, with its stack.
    if (e instanceof UsageError || (e instanceof UnderlayError && e.code === 'invalid-argument')) {
      process.stderr.write(`underlay ${cmd}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof UnderlayError) {
      process.stderr.write(`underlay ${cmd}: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`underlay ${cmd}: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}
