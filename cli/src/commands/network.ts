/**
 * `underlay network ls | inspect NAME | create NAME [flags] | rm NAME...`: cluster networks through the
 * controller's API. `create` takes docker's flags (--subnet, --ip-range, --gateway, --aux-address,
 * -o/--opt, --ipam-opt, --ipv6, --internal, --label) and matches each range, gateway and aux address to
 * its subnet as docker does.
 */
import {
  NetworkCreateResponse,
  NetworkDetail,
  NetworkList,
  contains,
  parseAddr,
  parseCidr,
  type Cidr,
  type NetworkCreateRequestInput,
  type NetworkSummary,
} from '@underlay/core';
import { z } from 'zod';
import { ApiClient, ClientError, appendRows, clientFlags, clientOptions, noArgs, pageFlags, pageSizeOf } from '../client.js';
import { UsageError, type FlagSpec } from '../flags.js';
import { answerFlags, outputFlags, outputOf, printList, printStructured } from '../output.js';
import type { CommandDef, RunContext } from '../program.js';
import { since, table } from '../table.js';

export const networkCreateFlags: FlagSpec[] = [
  { key: 'subnet', flag: 'subnet', repeat: true, list: true, value: 'CIDR', layered: false, help: 'subnet (repeat or comma-separate for several; IPv6 needs --ipv6)' },
  { key: 'ipRange', flag: 'ip-range', repeat: true, list: true, value: 'CIDR', layered: false, help: 'allocate container addresses from this range of its subnet' },
  { key: 'gateway', flag: 'gateway', repeat: true, list: true, value: 'IP', layered: false, help: 'gateway of its subnet (default: the first usable address)' },
  { key: 'auxAddress', flag: 'aux-address', repeat: true, value: 'NAME=IP', layered: false, help: 'reserve an address of a subnet (repeatable)' },
  { key: 'opt', flag: 'opt', short: 'o', repeat: true, value: 'KEY=VALUE', layered: false, help: 'driver option: parent, type, macvlan_mode, ipvlan_mode, ipvlan_flag (repeatable)' },
  { key: 'ipamOpt', flag: 'ipam-opt', repeat: true, value: 'KEY=VALUE', layered: false, help: 'IPAM option: block_size, strict_affinity, space (repeatable)' },
  { key: 'ipv6', flag: 'ipv6', boolean: true, layered: false, help: 'IPv6 subnets as well' },
  { key: 'internal', flag: 'internal', boolean: true, layered: false, help: 'no gateway (no access outside the network)' },
  { key: 'label', flag: 'label', repeat: true, value: 'KEY=VALUE', layered: false, help: 'label (repeatable)' },
];

function keyValues(flag: string, list: unknown): Record<string, string> {
  const m: Record<string, string> = {};
  for (const kv of (list as string[] | undefined) ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new UsageError(`${flag} ${kv}: expected KEY=VALUE`);
    m[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return m;
}

const strings = (v: unknown): string[] => ((v as string[] | undefined) ?? []).map((s) => s.trim()).filter(Boolean);

/** The API body from docker-like flags. */
export function createRequest(name: string, v: Record<string, unknown>): NetworkCreateRequestInput {
  const subnets = strings(v.subnet);
  if (subnets.length === 0) throw new UsageError('--subnet is required (underlay pools need an explicit subnet)');
  const parsed: { text: string; cidr: Cidr; ipRange?: string; gateway?: string; aux: Record<string, string> }[] = subnets.map((text) => {
    try {
      return { text, cidr: parseCidr(text, { strict: true }), aux: {} };
    } catch (e) {
      throw new UsageError(`--subnet: ${(e as Error).message}`);
    }
  });
  const owner = (what: string, value: string, isRange: boolean) => {
    let match: (typeof parsed)[number] | undefined;
    try {
      if (isRange) {
        const r = parseCidr(value);
        match = parsed.find((s) => s.cidr.family === r.family && s.cidr.prefix <= r.prefix && contains(s.cidr, { family: r.family, value: r.network }));
      } else {
        const a = parseAddr(value);
        match = parsed.find((s) => contains(s.cidr, a));
      }
    } catch (e) {
      throw new UsageError(`--${what}: ${(e as Error).message}`);
    }
    if (!match) throw new UsageError(`no matching subnet for ${what === 'ip-range' ? 'range' : what} ${value}`);
    return match;
  };
  for (const r of strings(v.ipRange)) {
    const s = owner('ip-range', r, true);
    if (s.ipRange) throw new UsageError(`cannot configure multiple ranges (${s.ipRange}, ${r}) on the same subnet (${s.text})`);
    s.ipRange = r;
  }
  for (const g of strings(v.gateway)) {
    const s = owner('gateway', g, false);
    if (s.gateway) throw new UsageError(`cannot configure multiple gateways (${s.gateway}, ${g}) for the same subnet (${s.text})`);
    s.gateway = g;
  }
  for (const [host, ip] of Object.entries(keyValues('--aux-address', v.auxAddress))) owner('aux-address', ip, false).aux[host] = ip;
  return {
    name,
    options: keyValues('--opt', v.opt),
    ipamOptions: keyValues('--ipam-opt', v.ipamOpt),
    subnets: parsed.map((s) => ({ subnet: s.text, ...(s.ipRange ? { ipRange: s.ipRange } : {}), ...(s.gateway ? { gateway: s.gateway } : {}), auxAddresses: s.aux })),
    ipv6: v.ipv6 === true,
    internal: v.internal === true,
    labels: keyValues('--label', v.label),
  };
}

const modeOf = (n: NetworkSummary) => `${n.driver} ${n.mode}`.trim();

function networkTable(networks: NetworkSummary[], now: number, wide: boolean): string {
  const head = ['NAME', 'MODE', 'PARENT', 'SUBNETS', 'HOSTS', 'ENDPOINTS', 'CREATED'];
  const row = (n: NetworkSummary) => [n.name, modeOf(n), n.parent, n.subnets.join(','), `${n.readyHosts}/${n.totalHosts}`, n.endpointCount, since(n.created.time, now)];
  if (!wide) return table(head, networks.map(row));
  return table([...head, 'IPV6', 'INTERNAL', 'CREATED BY', 'SEQ'], networks.map((n) => [...row(n), String(n.ipv6), String(n.internal), n.created.actor, n.created.seq]));
}

const mapText = (m: Record<string, string>) => Object.entries(m).map(([k, v]) => `${k}=${v}`).join(', ') || '-';

function inspectText(n: NetworkDetail, now: number): string {
  const d = n.definition;
  const subnetLines = d.subnets.map((s) => {
    const extra = [s.ipRange && `range ${s.ipRange}`, s.gateway && `gateway ${s.gateway}`, Object.keys(s.auxAddresses).length && `aux ${mapText(s.auxAddresses)}`].filter(Boolean);
    return `${s.subnet}${extra.length ? ` (${extra.join(', ')})` : ''}`;
  });
  const created = `${n.created.time} (${since(n.created.time, now)}) by ${n.created.actor}${n.created.originNode ? ` on ${n.created.originNode}` : ''}, seq ${n.created.seq}`;
  const fields: [string, string][] = [
    ['Name', n.name],
    ['Mode', modeOf(n)],
    ['Parent', n.parent ?? '- (isolated: a dummy link per host)'],
    ['Subnets', subnetLines.join('\n           ')],
    ['IPv6', String(d.ipv6)],
    ['Internal', String(d.internal)],
    ['Options', mapText(d.options)],
    ['IPAM opts', mapText(d.ipamOptions)],
    ['Labels', mapText(d.labels)],
    ['Created', created],
    ['Hosts', `${n.readyHosts}/${n.totalHosts} ready`],
    ['Endpoints', String(n.endpointCount)],
  ];
  let s = fields.map(([k, v]) => `${`${k}:`.padEnd(11)}${v}`).join('\n') + '\n';
  if (n.hosts.length) {
    s += `\n${table(
      ['HOST', 'NODE STATUS', 'STATE', 'PARENT', 'REPLICA', 'DETAIL'],
      n.hosts.map((h) => [h.node, h.nodeReady ? 'Ready' : 'NotReady', h.state, h.parent, h.replica === undefined ? undefined : h.replica ? 'yes' : 'no', h.detail]),
    )}`;
  }
  if (n.endpoints.length) {
    s += `\n${table(
      ['ADDRESS', 'HOST', 'CONTAINER', 'STATE', 'ENDPOINT'],
      n.endpoints.map((e) => [e.address, e.node, e.container, e.error ? `${e.state}: ${e.error}` : e.state, e.endpointId?.slice(0, 12)]),
    )}`;
  }
  return s;
}

function oneName(rest: string[], what: string): string {
  if (rest.length !== 1) throw new UsageError(`${what} takes one network name${rest.length > 1 ? `, not ${rest.length}` : ''}`);
  return rest[0]!;
}

const out = (s: string) => process.stdout.write(s);

async function ls(p: RunContext): Promise<number> {
  const fmt = outputOf(p);
  noArgs(p, 'network ls');
  const { data, raw } = await new ApiClient(clientOptions(p)).get('/v1/networks', NetworkList);
  const now = Date.now();
  printList(fmt, raw, { table: (wide) => networkTable(data.networks, now, wide), names: () => data.networks.map((n) => n.name) });
  return 0;
}

async function inspect(p: RunContext): Promise<number> {
  const fmt = outputOf(p, ['table', 'json', 'yaml']);
  const name = oneName(p.rest, 'network inspect');
  const size = pageSizeOf(p);
  // The network from the first page, its endpoints from all of them.
  const { data, raw } = await new ApiClient(clientOptions(p)).getAll(`/v1/networks/${encodeURIComponent(name)}`, NetworkDetail, size, (all, page) => appendRows(all, page, 'endpoints'));
  if (!printStructured(fmt, raw)) out(inspectText(data, Date.now()));
  return 0;
}

async function create(p: RunContext): Promise<number> {
  const fmt = outputOf(p, ['table', 'json', 'yaml']);
  const name = oneName(p.rest, 'network create');
  const body = createRequest(name, p.values);
  const { data, raw } = await new ApiClient(clientOptions(p)).request('POST', '/v1/networks', NetworkCreateResponse, body);
  if (!printStructured(fmt, raw)) {
    out(`${data.network.name}\n`);
    if (!data.created) process.stderr.write(`network ${name} already exists with this definition\n`);
  }
  return 0;
}

async function rm(p: RunContext): Promise<number> {
  const fmt = outputOf(p, ['table', 'json', 'yaml']);
  if (p.rest.length === 0) throw new UsageError('network rm takes one or more network names');
  const api = new ApiClient(clientOptions(p));
  const removed: string[] = [];
  let failed = false;
  for (const name of p.rest) {
    try {
      await api.request('DELETE', `/v1/networks/${encodeURIComponent(name)}`, z.unknown());
      removed.push(name);
      if (fmt === 'table') out(`${name}\n`);
    } catch (e) {
      // Like docker: report each failure and go on with the other names.
      if (!(e instanceof ClientError) || e.status === undefined) throw e;
      process.stderr.write(`underlay: ${e.message}\n`);
      failed = true;
    }
  }
  printStructured(fmt, { removed });
  return failed ? 1 : 0;
}

const client = { flags: clientFlags, section: 'client' } as const;

export const networkCommand: CommandDef = {
  name: 'network',
  summary: 'cluster networks: ls, inspect, create, rm',
  subcommands: [
    { name: 'ls', aliases: ['list'], summary: 'list cluster networks', ...client, flags: [...clientFlags, ...outputFlags], run: ls },
    { name: 'inspect', summary: 'one network: definition, hosts, endpoints', args: '[NAME]', ...client, flags: [...clientFlags, ...pageFlags, ...answerFlags], run: inspect },
    {
      name: 'create',
      summary: 'create a network on every host (docker network create\'s flags)',
      args: '[NAME]',
      ...client,
      // -o is docker's --opt here; --output has no short name.
      flags: [...clientFlags, ...networkCreateFlags, ...answerFlags.map(({ short: _, ...f }) => f)],
      epilog: 'Example:\n  underlay network create web --subnet 198.51.100.0/24 --gateway 198.51.100.1 -o parent=eth1',
      run: create,
    },
    { name: 'rm', aliases: ['remove'], summary: 'remove networks from every host', args: '[NAMES...]', ...client, flags: [...clientFlags, ...answerFlags], run: rm },
  ],
};
