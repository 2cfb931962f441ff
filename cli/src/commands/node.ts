/** `underlay node ls`: every node, Ready while its lease holds, when it was last seen. */
import { NodeList } from '@underlay/core';
import { ApiClient, clientEnv, clientFlags, clientOptions } from '../client.js';
import { UsageError, helpFor, parseFlags } from '../flags.js';
import { ago, table } from '../table.js';

export const nodeFlags = clientFlags;
export const nodeUsage = 'underlay node ls      nodes: Ready or NotReady, last seen, address, version';

export async function nodeCommand(argv: string[]): Promise<number> {
  const [sub, ...args] = argv;
  const p = parseFlags(args, nodeFlags, clientEnv());
  if (!sub || p.help || sub === 'help' || sub === '--help' || sub === '-h') {
    process.stdout.write(`usage:\n  ${nodeUsage}\n\nflags:\n${helpFor(nodeFlags)}\n`);
    return sub || p.help ? 0 : 2;
  }
  if (sub !== 'ls' && sub !== 'list') throw new UsageError(`unknown node command ${JSON.stringify(sub)}; usage: ${nodeUsage}`);
  if (p.rest.length) throw new UsageError(`node ls takes no arguments (got ${p.rest.join(' ')})`);
  const opts = clientOptions(p);
  const { data, raw } = await new ApiClient(opts).get('/v1/nodes', NodeList);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(raw, null, 2)}\n`);
    return 0;
  }
  process.stdout.write(
    table(
      ['NAME', 'STATUS', 'LAST SEEN', 'ADDRESS', 'VERSION', 'ENDPOINTS', 'NETWORKS'],
      data.nodes.map((n) => {
        const bad = n.networks.filter((x) => x.state !== 'ready');
        const nets = n.networks.length ? `${n.networks.length - bad.length}/${n.networks.length} ready${bad.length ? ` (${bad.map((b) => `${b.name}: ${b.state}`).join(', ')})` : ''}` : undefined;
        return [n.name, n.status, n.lastSeenAgoMs === undefined ? 'never' : ago(n.lastSeenAgoMs), n.address, n.version, n.endpointCount, nets];
      }),
    ),
  );
  return 0;
}
