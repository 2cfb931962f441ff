/**
 * `underlay ipam usage`: address use per pool, and per block (which node owns it, how full).
 * `underlay ipam check`: the cluster IPAM against what every host's Docker reports (exit 1 when anything is found).
 * `underlay ipam release ADDRESS [--network NAME]`: an operator frees a leaked address (refused while a container holds it).
 */
import { IpamCheck, IpamReleaseResponse, IpamUsage } from '@underlay/core';
import { ApiClient, clientFlags, clientOptions, noArgs, pageFlags, pageSizeOf, type PagedRaw } from '../client.js';
import { UsageError, type FlagSpec } from '../flags.js';
import { answerFlags, outputFlags, outputOf, printList, printStructured } from '../output.js';
import type { CommandDef, RunContext } from '../program.js';
import { table } from '../table.js';

/** "12%" (exact for any size: counts may be bigger than a JSON number). */
function percent(used: number, size: string): string {
  const s = BigInt(size);
  if (s === 0n) return '-';
  const p = Number((BigInt(used) * 10_000n) / s) / 100;
  return `${p < 1 && used > 0 ? p.toFixed(2) : Math.round(p)}%`;
}

/**
 * Adds a later page of GET /v1/ipam/usage to the first: every page lists every pool (with its counts) and the blocks
 * of the page; a pool's blocks are appended to its entry, a pool new since the first page is added.
 */
function mergeUsage(all: PagedRaw, page: PagedRaw): void {
  type Pool = { poolId: string; blocks: unknown[] };
  const pools = all.pools as Pool[];
  const byId = new Map(pools.map((pool) => [pool.poolId, pool]));
  for (const pool of page.pools as Pool[]) {
    const known = byId.get(pool.poolId);
    if (!known) {
      pools.push(pool);
      byId.set(pool.poolId, pool);
    } else for (const b of pool.blocks) known.blocks.push(b);
  }
}

async function usage(p: RunContext): Promise<number> {
  const fmt = outputOf(p);
  noArgs(p, 'ipam usage');
  const size = pageSizeOf(p);
  const { data, raw } = await new ApiClient(clientOptions(p)).getAll('/v1/ipam/usage', IpamUsage, size, mergeUsage);
  printList(fmt, raw, {
    names: () => data.pools.map((pool) => pool.cidr),
    table: (wide) => {
      const rows: (string | number | undefined)[][] = [];
      for (const pool of data.pools) {
        const name = `${pool.cidr}${pool.ipRange ? ` range ${pool.ipRange}` : ''}`;
        rows.push([name, pool.space, pool.nodes.join(',') || undefined, pool.used, pool.size, percent(pool.used, pool.size), pool.networks.join(',') || undefined, ...(wide ? [pool.poolId] : [])]);
        for (const b of pool.blocks) rows.push([`  ${b.block}`, undefined, b.node, b.used, b.size, percent(b.used, b.size), undefined, ...(wide ? [undefined] : [])]);
      }
      return table(['POOL / BLOCK', 'SPACE', 'NODES', 'USED', 'SIZE', 'USE%', 'NETWORKS', ...(wide ? ['POOL ID'] : [])], rows);
    },
  });
  return 0;
}

const out = (s: string) => process.stdout.write(s);

/** The check's findings as text: one table per kind, then what is no finding (held, pending). */
export function checkText(c: IpamCheck): string {
  const parts: string[] = [];
  const section = (title: string, head: string[], rows: (string | number | undefined)[][]) => {
    if (rows.length) parts.push(`${title} (${rows.length}):\n${table(head, rows)}`);
  };
  section('allocations with no container', ['ADDRESS', 'NETWORK', 'NODE', 'REASON', 'DETAIL'], c.allocationsWithoutContainer.map((a) => [a.address, a.network, a.node, a.reason, a.detail]));
  section('containers with no allocation', ['ADDRESS', 'NETWORK', 'NODE', 'CONTAINER', 'REASON', 'DETAIL'], c.containersWithoutAllocation.map((a) => [a.address, a.network, a.node, a.container ?? a.containerId?.slice(0, 12), a.reason, a.detail]));
  section('addresses held twice', ['ADDRESS', 'NETWORK', 'HOLDERS'], c.duplicateAddresses.map((d) => [d.address, d.network, d.holders.map((h) => `${h.container ?? h.containerId?.slice(0, 12) ?? h.endpointId.slice(0, 12)}@${h.node}`).join(', ')]));
  section('blocks whose node is gone', ['BLOCK', 'NETWORK', 'NODE', 'ENDPOINTS', 'DETAIL'], c.goneNodeBlocks.map((b) => [b.block, b.network, b.node, b.endpoints, b.detail]));
  const nodes = `${c.nodes.ready.length} node${c.nodes.ready.length === 1 ? '' : 's'} reporting${c.nodes.notReady.length ? `, not reporting: ${c.nodes.notReady.join(', ')}` : ''}`;
  const notes = [
    ...(c.held.length ? [`${c.held.length} address${c.held.length === 1 ? '' : 'es'} held for a container's restart (no finding): ${c.held.map((h) => `${h.address}@${h.node}`).join(', ')}`] : []),
    ...(c.pending ? [`${c.pending} allocation${c.pending === 1 ? '' : 's'} newer than their node's latest report, not judged (check again in a few seconds)`] : []),
  ];
  const head = c.clean ? `clean: every allocation has its container and every container its allocation (${nodes})` : `${c.findings} finding${c.findings === 1 ? '' : 's'} (${nodes})`;
  return [head, ...parts, ...notes].join('\n\n') + '\n';
}

async function check(p: RunContext): Promise<number> {
  const fmt = outputOf(p, ['table', 'json', 'yaml']);
  noArgs(p, 'ipam check');
  const { data, raw } = await new ApiClient(clientOptions(p)).get('/v1/ipam/check', IpamCheck);
  if (!printStructured(fmt, raw)) out(checkText(data));
  return data.clean ? 0 : 1;
}

const releaseFlags: FlagSpec[] = [{ key: 'network', flag: 'network', value: 'NAME', help: 'the network the address is on (needed when it is allocated in several address spaces)', layered: false }];

async function release(p: RunContext): Promise<number> {
  const fmt = outputOf(p, ['table', 'json', 'yaml']);
  if (p.rest.length !== 1) throw new UsageError(`ipam release takes one address${p.rest.length > 1 ? `, not ${p.rest.length}` : ''}`);
  const network = typeof p.values.network === 'string' ? p.values.network : undefined;
  const body = { address: p.rest[0]!, ...(network ? { network } : {}) };
  const { data, raw } = await new ApiClient(clientOptions(p)).request('POST', '/v1/ipam/release', IpamReleaseResponse, body);
  if (!printStructured(fmt, raw)) out(`released ${data.address}${data.network ? ` of network ${data.network}` : ''} (allocated to ${data.node}, pool ${data.poolId})\n`);
  return 0;
}

export const ipamCommand: CommandDef = {
  name: 'ipam',
  summary: 'addresses: usage, check, release',
  subcommands: [
    { name: 'usage', summary: 'addresses used per pool and per block (-q: the pools)', flags: [...clientFlags, ...pageFlags, ...outputFlags], section: 'client', run: usage },
    {
      name: 'check',
      summary: 'compare the cluster IPAM with every host\'s Docker (exit 1 when anything is found)',
      flags: [...clientFlags, ...answerFlags],
      section: 'client',
      epilog:
        'Lists allocations with no container, containers with no allocation, addresses held twice and blocks whose node is gone.\nExit codes: 0 clean, 1 findings (or the controller refused or cannot be reached), 2 usage.',
      run: check,
    },
    {
      name: 'release',
      summary: 'release a leaked address (refused while a container holds it)',
      args: '[ADDRESS]',
      flags: [...clientFlags, ...releaseFlags, ...answerFlags],
      section: 'client',
      epilog: 'Example:\n  underlay ipam check\n  underlay ipam release 192.0.2.17 --network n1',
      run: release,
    },
  ],
};
