/**
 * The `underlay` command line: the command tree (program.ts builds it on commander). The services
 * (up, controller, agent, creds) load their code only when they run: a client command, and any `--help`,
 * loads neither etcd, NATS nor netlink modules (their flags are in specs/, which load none).
 */
import { UnderlayError } from '@underlay/core';
import { UsageError } from './flags.js';
import { ClientError, clientFlags } from './client.js';
import { bashCompletion, zshCompletion } from './completion.js';
import { buildProgram, CommandLineError, type CommandDef } from './program.js';
import { agentFlags } from './specs/agent.js';
import { controllerFlags } from './specs/controller.js';
import { credsFlags, credsForce, credsOut, credsStateDir } from './specs/creds.js';
import { logFlags } from './specs/log.js';
import { upFlags } from './specs/up.js';
import { endpointCommand } from './commands/endpoint.js';
import { eventsCommand } from './commands/events.js';
import { ipamCommand } from './commands/ipam.js';
import { networkCommand } from './commands/network.js';
import { nodeCommand } from './commands/node.js';
import { traceCommand } from './commands/trace.js';
import { versionCommand } from './commands/version.js';
import { CLIENT_VERSION } from './version.js';

/** Config-file sections and their keys. */
export const SECTIONS = { client: clientFlags, controller: [...controllerFlags, ...logFlags], agent: [...agentFlags, ...logFlags], up: upFlags, creds: credsFlags };

const creds = (name: string, summary: string, args: string | undefined, flags: typeof credsFlags): CommandDef => ({
  name,
  summary,
  ...(args ? { args } : {}),
  flags,
  section: 'creds',
  run: async (p) => (await import('./commands/creds.js')).credsCommand(name, p),
});

export const commands: CommandDef[] = [
  { name: 'up', summary: 'start etcd, NATS, a controller and an agent on this host', flags: upFlags, section: 'up', run: async (p) => (await import('./commands/up.js')).upCommand(p) },
  { name: 'controller', summary: 'run a controller', flags: [...controllerFlags, ...logFlags], section: 'controller', run: async (p) => (await import('./commands/controller.js')).controllerCommand(p) },
  { name: 'agent', summary: 'run the node agent (the Docker plugin)', flags: [...agentFlags, ...logFlags], section: 'agent', run: async (p) => (await import('./commands/agent.js')).agentCommand(p) },
  {
    name: 'creds',
    summary: 'NATS identities: init, node NAME, controller NAME, nats-config',
    subcommands: [
      creds('init', 'make the operator, account and signing keys (once)', undefined, [credsStateDir, credsForce]),
      creds('node', 'a node\'s NATS credentials (.creds)', '[NAME]', [credsStateDir, credsOut]),
      creds('controller', 'a controller\'s NATS credentials (.creds)', '[NAME]', [credsStateDir, credsOut]),
      creds('nats-config', 'the nats-server configuration for them', undefined, [credsStateDir, credsOut]),
    ],
  },
  networkCommand,
  endpointCommand,
  nodeCommand,
  ipamCommand,
  eventsCommand,
  traceCommand,
  versionCommand,
];

function program() {
  const p = buildProgram(commands, { version: CLIENT_VERSION, sections: SECTIONS, about: 'Cluster-wide macvlan/ipvlan networking for Docker: the services and the client of their API.' });
  p.command
    .command('completion')
    .summary('print a shell completion script: bash or zsh')
    .description('print a shell completion script.\n  bash: source <(underlay completion bash)   (or save it in /etc/bash_completion.d/underlay)\n  zsh:  source <(underlay completion zsh)    (or save it as _underlay in a directory of $fpath)')
    .argument('<SHELL>', 'bash or zsh')
    .action((shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new CommandLineError(`completion: SHELL is bash or zsh (got ${JSON.stringify(shell)})`, 'completion');
      process.stdout.write(shell === 'bash' ? bashCompletion(p.command) : zshCompletion(p.command));
    });
  return p;
}

/** The command tree (for completion and tests). */
export const commandTree = () => program().command;

export async function main(argv: string[]): Promise<number> {
  const top = argv.find((a) => !a.startsWith('-')) ?? '';
  try {
    return await program().run(argv);
  } catch (e) {
    if (e instanceof ClientError) {
      process.stderr.write(`underlay: ${e.message}\n`);
      return 1;
    }
    const who = e instanceof CommandLineError ? (e.path.split(' ')[0] ?? '') : top;
    const prefix = who ? `underlay ${who}` : 'underlay';
    // Exit 2 for usage: a bad flag, argument or configuration file. Any other error of the one model (etcd
    // unreachable, Docker or the kernel refusing) is its message and exit 1; anything else a bug, with its stack.
    if (e instanceof UsageError || (e instanceof UnderlayError && e.code === 'invalid-argument')) {
      process.stderr.write(`${prefix}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof UnderlayError) {
      process.stderr.write(`${prefix}: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`${prefix}: ${(e as Error).stack ?? e}\n`);
    return 1;
  }
}
