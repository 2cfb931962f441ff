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
import { ApiClient, ClientError, clientEnv, clientFlags, clientOptions, helpRequested, noArgs, printJson } from '../client.js';
import { UsageError, parseFlags, type FlagSpec } from '../flags.js';
import { since, table } from '../table.js';

export const networkCreateFlags: FlagSpec[] = [
  { key: 'subnet', flag: 'subnet', repeat: true, list: true, value: 'CIDR', help: 'subnet (repeat or comma-separate for several; IPv6 needs --ipv6)' },
  { key: 'ipRange', flag: 'ip-range', repeat: true, list: true, value: 'CIDR', help: 'allocate container addresses from this range of its subnet' },
  { key: 'gateway', flag: 'gateway', repeat: true, list: true, value: 'IP', help: 'gateway of its subnet (default: the first usable address)' },
  { key: 'auxAddress', flag: 'aux-address', repeat: true, value: 'NAME=IP', help: 'reserve an address of a subnet (repeatable)' },
  { key: 'opt', flag: 'opt', short: 'o', repeat: true, value: 'KEY=VALUE', help: 'driver option: parent, type, macvlan_mode, ipvlan_mode, ipvlan_flag (repeatable)' },
  { key: 'ipamOpt', flag: 'ipam-opt', repeat: true, value: 'KEY=VALUE', help: 'IPAM option: block_size, strict_affinity, space (repeatable)' },
  { key: 'ipv6', flag: 'ipv6', boolean: true, help: 'IPv6 subnets as well' },
  { key: 'internal', flag: 'internal', boolean: true, help: 'no gateway (no access outside the network)' },
  { key: 'label', flag: 'label', repeat: true, value: 'KEY=VALUE', help: 'label (repeatable)' },
];

export const networkFlags: FlagSpec[] = [...clientFlags, ...networkCreateFlags];

export const networkUsage = [
  'underlay network ls                      list cluster networks',
  'underlay network inspect NAME            one network: definition, hosts, endpoints',
  'underlay network create NAME [flags]     create a network on every host',
  'underlay network rm NAME...              remove networks from every host',
].join('\n');

const out = (s: string) => process.stdout.write(s);

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

function networkTable(networks: NetworkSummary[], now: number): string {
  return table(
    ['NAME', 'MODE', 'PARENT', 'SUBNETS', 'HOSTS', 'ENDPOINTS', 'CREATED'],
    networks.map((n) => [n.name, modeOf(n), n.parent, n.subnets.join(','), `${n.readyHosts}/${n.totalHosts}`, n.endpointCount, since(n.created.time, now)]),
  );
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

export async function networkCommand(argv: string[]): Promise<number> {
  const [sub, ...args] = argv;
  const p = parseFlags(args, networkFlags, clientEnv());
  const help = helpRequested(sub, p, networkUsage, networkFlags);
  if (help !== undefined) return help;
  const createOnly = networkCreateFlags.map((f) => f.key).filter((k) => p.fromFlags.has(k));
  if (sub !== 'create' && createOnly.length) {
    const f = networkCreateFlags.find((x) => x.key === createOnly[0])!;
    throw new UsageError(`--${f.flag} is a flag of network create`);
  }
  const opts = clientOptions(p);
  const api = new ApiClient(opts);
  const now = Date.now();
  switch (sub) {
    case 'ls':
    case 'list': {
      noArgs(p, 'network ls');
      const { data, raw } = await api.get('/v1/networks', NetworkList);
      if (opts.json) printJson(raw);
      else out(networkTable(data.networks, now));
      return 0;
    }
    case 'inspect': {
      const name = oneName(p.rest, 'network inspect');
      const { data, raw } = await api.get(`/v1/networks/${encodeURIComponent(name)}`, NetworkDetail);
      if (opts.json) printJson(raw);
      else out(inspectText(data, now));
      return 0;
    }
    case 'create': {
      const name = oneName(p.rest, 'network create');
      const body = createRequest(name, p.values);
      const { data, raw } = await api.request('POST', '/v1/networks', NetworkCreateResponse, body);
      if (opts.json) printJson(raw);
      else {
        out(`${data.network.name}\n`);
        if (!data.created) process.stderr.write(`network ${name} already exists with this definition\n`);
      }
      return 0;
    }
    case 'rm':
    case 'remove': {
      if (p.rest.length === 0) throw new UsageError('network rm takes one or more network names');
      const removed: string[] = [];
      let failed = false;
      for (const name of p.rest) {
        try {
          await api.request('DELETE', `/v1/networks/${encodeURIComponent(name)}`, z.unknown());
          removed.push(name);
          if (!opts.json) out(`${name}\n`);
        } catch (e) {
          // Like docker: report each failure and go on with the other names.
          if (!(e instanceof ClientError) || e.status === undefined) throw e;
          process.stderr.write(`underlay: ${e.message}\n`);
          failed = true;
        }
      }
      if (opts.json) printJson({ removed });
      return failed ? 1 : 0;
    }
    default:
      throw new UsageError(`unknown network command ${JSON.stringify(sub)}\n\nusage:\n${networkUsage.replace(/^/gm, '  ')}`);
  }
}
