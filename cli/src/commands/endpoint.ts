/** `underlay endpoint ls [--network NAME] [--node NAME]`: every endpoint address → host, container, network, state. */
import { EndpointList } from '@underlay/core';
import { ApiClient, clientEnv, clientFlags, clientOptions } from '../client.js';
import { UsageError, helpFor, parseFlags, type FlagSpec } from '../flags.js';
import { table } from '../table.js';

export const endpointFlags: FlagSpec[] = [
  ...clientFlags,
  { key: 'network', flag: 'network', value: 'NAME', help: 'only endpoints on this network' },
  { key: 'node', flag: 'node', value: 'NAME', help: 'only endpoints of this node' },
];
export const endpointUsage = 'underlay endpoint ls [--network NAME] [--node NAME]   endpoint addresses: host, container, network, state';

export async function endpointCommand(argv: string[]): Promise<number> {
  const [sub, ...args] = argv;
  const p = parseFlags(args, endpointFlags, clientEnv());
  if (!sub || p.help || sub === 'help' || sub === '--help' || sub === '-h') {
    process.stdout.write(`usage:\n  ${endpointUsage}\n\nflags:\n${helpFor(endpointFlags)}\n`);
    return sub || p.help ? 0 : 2;
  }
  if (sub !== 'ls' && sub !== 'list') throw new UsageError(`unknown endpoint command ${JSON.stringify(sub)}; usage: ${endpointUsage}`);
  if (p.rest.length) throw new UsageError(`endpoint ls takes no arguments (got ${p.rest.join(' ')})`);
  const opts = clientOptions(p);
  const q = new URLSearchParams();
  if (typeof p.values.network === 'string') q.set('network', p.values.network);
  if (typeof p.values.node === 'string') q.set('node', p.values.node);
  const { data, raw } = await new ApiClient(opts).get(`/v1/endpoints${q.size ? `?${q}` : ''}`, EndpointList);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(raw, null, 2)}\n`);
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
