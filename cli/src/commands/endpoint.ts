/** `underlay endpoint ls [--network NAME] [--node NAME]`: every endpoint address → host, container, network, state. */
import { EndpointList } from '@underlay/core';
import { ApiClient, clientFlags, printJson, singleCommand } from '../client.js';
import type { FlagSpec } from '../flags.js';
import { table } from '../table.js';

export const endpointFlags: FlagSpec[] = [
  ...clientFlags,
  { key: 'network', flag: 'network', value: 'NAME', help: 'only endpoints on this network' },
  { key: 'node', flag: 'node', value: 'NAME', help: 'only endpoints of this node' },
];
export const endpointUsage = 'underlay endpoint ls [--network NAME] [--node NAME]   endpoint addresses: host, container, network, state';

export async function endpointCommand(argv: string[]): Promise<number> {
  const c = singleCommand(argv, { name: 'endpoint', subs: ['ls', 'list'], flags: endpointFlags, usage: endpointUsage });
  if (typeof c === 'number') return c;
  const { p, opts } = c;
  const q = new URLSearchParams();
  if (typeof p.values.network === 'string') q.set('network', p.values.network);
  if (typeof p.values.node === 'string') q.set('node', p.values.node);
  const { data, raw } = await new ApiClient(opts).get(`/v1/endpoints${q.size ? `?${q}` : ''}`, EndpointList);
  if (opts.json) {
    printJson(raw);
    return 0;
  }
  process.stdout.write(
    table(
      ['ADDRESS', 'HOST', 'CONTAINER', 'NETWORK', 'STATE', 'ENDPOINT'],
      data.endpoints.map((e) => [e.address, e.node, e.container, e.network, e.error ? `${e.state}: ${e.error}` : e.state, e.endpointId?.slice(0, 12)]),
    ),
  );
  return 0;
}
