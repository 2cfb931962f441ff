/** The `underlay` command line. */
import { UnderlayError } from '@underlay/core';
import { UsageError, helpFor } from './flags.js';
import { agentCommand, agentFlags } from './commands/agent.js';
import { controllerCommand, controllerFlags } from './commands/controller.js';
import { eventsCommand, eventsFlags } from './commands/events.js';
import { upCommand, upFlags } from './commands/up.js';

const commands = {
  up: { run: upCommand, flags: upFlags, about: 'start etcd, NATS, a controller and an agent on this host' },
  controller: { run: controllerCommand, flags: controllerFlags, about: 'run a controller' },
  agent: { run: agentCommand, flags: agentFlags, about: 'run the node agent (the Docker plugin)' },
  events: { run: eventsCommand, flags: eventsFlags, about: 'print the cluster event log' },
} as const;

export function usage(): string {
  const lines = ['usage: underlay COMMAND [flags]', '', 'commands:'];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(12)}${c.about}`);
  for (const [name, c] of Object.entries(commands)) lines.push('', `underlay ${name}:`, helpFor(c.flags));
  lines.push('', 'Every flag can also be set as an environment variable: --plugin-dir is UNDERLAY_PLUGIN_DIR.');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(`${usage()}\n`);
    return cmd ? 0 : 2;
  }
  const c = commands[cmd as keyof typeof commands];
  if (!c) {
    process.stderr.write(`underlay: unknown command ${JSON.stringify(cmd)}\n\n${usage()}\n`);
    return 2;
  }
  try {
    return await c.run(rest);
  } catch (e) {
    if (e instanceof UsageError || e instanceof UnderlayError) {
      process.stderr.write(`underlay ${cmd}: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`underlay ${cmd}: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}
