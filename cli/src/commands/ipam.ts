/** `underlay ipam usage`: address use per pool, and per block (which node owns it, how full). */
import { IpamUsage } from '@underlay/core';
import { ApiClient, clientFlags, printJson, singleCommand } from '../client.js';
import { table } from '../table.js';

export const ipamFlags = clientFlags;
export const ipamUsageText = 'underlay ipam usage   addresses used per pool and per block';

/** "12%" (exact for any size: counts may be bigger than a JSON number). */
function percent(used: number, size: string): string {
  const s = BigInt(size);
  if (s === 0n) return '-';
  const p = Number((BigInt(used) * 10_000n) / s) / 100;
  return `${p < 1 && used > 0 ? p.toFixed(2) : Math.round(p)}%`;
}

export async function ipamCommand(argv: string[]): Promise<number> {
  const c = singleCommand(argv, { name: 'ipam', subs: ['usage'], flags: ipamFlags, usage: ipamUsageText });
  if (typeof c === 'number') return c;
  const { data, raw } = await new ApiClient(c.opts).get('/v1/ipam/usage', IpamUsage);
  if (c.opts.json) {
    printJson(raw);
    return 0;
  }
  const rows: (string | number | undefined)[][] = [];
  for (const pool of data.pools) {
    const name = `${pool.cidr}${pool.ipRange ? ` range ${pool.ipRange}` : ''}`;
    rows.push([name, pool.space, pool.nodes.join(',') || undefined, pool.used, pool.size, percent(pool.used, pool.size), pool.networks.join(',') || undefined]);
    for (const b of pool.blocks) rows.push([`  ${b.block}`, undefined, b.node, b.used, b.size, percent(b.used, b.size), undefined]);
  }
  process.stdout.write(table(['POOL / BLOCK', 'SPACE', 'NODES', 'USED', 'SIZE', 'USE%', 'NETWORKS'], rows));
  return 0;
}
