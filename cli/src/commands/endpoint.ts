/**
 * `underlay endpoint ls [--network NAME] [--node NAME]`: every endpoint address → host, container, network, state
 * (all pages of GET /v1/endpoints).
 */
import { EndpointList } from '@underlay/core';
import { ApiClient, appendRows, clientFlags, clientOptions, noArgs, pageFlags, pageSizeOf } from '../client.js';
import type { FlagSpec } from '../flags.js';
import { outputFlags, outputOf, printList } from '../output.js';
import type { CommandDef, RunContext } from '../program.js';
import { table } from '../table.js';

export const endpointFlags: FlagSpec[] = [
  ...clientFlags,
  ...pageFlags,
  ...outputFlags,
  { key: 'network', flag: 'network', value: 'NAME', help: 'only endpoints on this network', layered: false },
  { key: 'node', flag: 'node', value: 'NAME', help: 'only endpoints of this node', layered: false },
];

async function ls(p: RunContext): Promise<number> {
  const fmt = outputOf(p);
  noArgs(p, 'endpoint ls');
  const q = new URLSearchParams();
  if (typeof p.values.network === 'string') q.set('network', p.values.network);
  if (typeof p.values.node === 'string') q.set('node', p.values.node);
  const size = pageSizeOf(p);
  const { data, raw } = await new ApiClient(clientOptions(p)).getAll(`/v1/endpoints${q.size ? `?${q}` : ''}`, EndpointList, size, (all, page) => appendRows(all, page, 'endpoints'));
  printList(fmt, raw, {
    names: () => data.endpoints.map((e) => e.address),
    table: (wide) => {
      const head = ['ADDRESS', 'HOST', 'CONTAINER', 'NETWORK', 'STATE', 'ENDPOINT'];
      const rows = data.endpoints.map((e) => [e.address, e.node, e.container, e.network, e.error ? `${e.state}: ${e.error}` : e.state, wide ? e.endpointId : e.endpointId?.slice(0, 12)]);
      if (!wide) return table(head, rows);
      return table([...head, 'LINK', 'POOL', 'CONTAINER ID'], data.endpoints.map((e, i) => [...rows[i]!, e.link, e.poolId, e.containerId]));
    },
  });
  return 0;
}

export const endpointCommand: CommandDef = {
  name: 'endpoint',
  summary: 'endpoint addresses: ls',
  subcommands: [{ name: 'ls', aliases: ['list'], summary: 'endpoint addresses: host, container, network, state', flags: endpointFlags, section: 'client', run: ls }],
};
