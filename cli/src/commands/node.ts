/** `underlay node ls`: every node, Ready while its lease holds, when it was last seen. */
import { NodeList } from '@underlay/core';
import { ApiClient, clientFlags, printJson, singleCommand } from '../client.js';
import { ago, table } from '../table.js';

export const nodeFlags = clientFlags;
export const nodeUsage = 'underlay node ls      nodes: Ready or NotReady, last seen, address, version';

export async function nodeCommand(argv: string[]): Promise<number> {
  const c = singleCommand(argv, { name: 'node', subs: ['ls', 'list'], flags: nodeFlags, usage: nodeUsage });
  if (typeof c === 'number') return c;
  const { data, raw } = await new ApiClient(c.opts).get('/v1/nodes', NodeList);
  if (c.opts.json) {
    printJson(raw);
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
