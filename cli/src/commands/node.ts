/** `underlay node ls`: every node, Ready while its lease holds, when it was last seen. */
import { NodeList } from '@underlay/core';
import { ApiClient, clientFlags, clientOptions, noArgs } from '../client.js';
import { outputFlags, outputOf, printList } from '../output.js';
import type { CommandDef, RunContext } from '../program.js';
import { ago, table } from '../table.js';

async function ls(p: RunContext): Promise<number> {
  const fmt = outputOf(p);
  noArgs(p, 'node ls');
  const { data, raw } = await new ApiClient(clientOptions(p)).get('/v1/nodes', NodeList);
  printList(fmt, raw, {
    names: () => data.nodes.map((n) => n.name),
    table: (wide) => {
      const head = ['NAME', 'STATUS', 'LAST SEEN', 'ADDRESS', 'VERSION', 'ENDPOINTS', 'NETWORKS'];
      const rows = data.nodes.map((n) => {
        const bad = n.networks.filter((x) => x.state !== 'ready');
        const nets = n.networks.length ? `${n.networks.length - bad.length}/${n.networks.length} ready${bad.length ? ` (${bad.map((b) => `${b.name}: ${b.state}`).join(', ')})` : ''}` : undefined;
        return [n.name, n.status, n.lastSeenAgoMs === undefined ? 'never' : ago(n.lastSeenAgoMs), n.address, n.version, n.endpointCount, nets];
      });
      if (!wide) return table(head, rows);
      return table([...head, 'LEASE MS', 'REGISTERED', 'INTERFACES'], data.nodes.map((n, i) => [...rows[i]!, n.leaseMs, String(n.registered), n.interfaces.join(',')]));
    },
  });
  return 0;
}

export const nodeCommand: CommandDef = {
  name: 'node',
  summary: 'nodes: ls',
  subcommands: [{ name: 'ls', aliases: ['list'], summary: 'nodes: Ready or NotReady, last seen, address, version', flags: [...clientFlags, ...outputFlags], section: 'client', run: ls }],
};
