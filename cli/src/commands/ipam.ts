/** `underlay ipam usage`: address use per pool, and per block (which node owns it, how full). */
import { IpamUsage } from '@underlay/core';
import { ApiClient, clientFlags, clientOptions, noArgs } from '../client.js';
import { outputFlags, outputOf, printList } from '../output.js';
import type { CommandDef, RunContext } from '../program.js';
import { table } from '../table.js';

/** "12%" (exact for any size: counts may be bigger than a JSON number). */
function percent(used: number, size: string): string {
  const s = BigInt(size);
  if (s === 0n) return '-';
  const p = Number((BigInt(used) * 10_000n) / s) / 100;
  return `${p < 1 && used > 0 ? p.toFixed(2) : Math.round(p)}%`;
}

async function usage(p: RunContext): Promise<number> {
  const fmt = outputOf(p);
  noArgs(p, 'ipam usage');
  const { data, raw } = await new ApiClient(clientOptions(p)).get('/v1/ipam/usage', IpamUsage);
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

export const ipamCommand: CommandDef = {
  name: 'ipam',
  summary: 'address use: usage',
  subcommands: [{ name: 'usage', summary: 'addresses used per pool and per block (-q: the pools)', flags: [...clientFlags, ...outputFlags], section: 'client', run: usage }],
};
