/**
 * gobgpd 3.10 API payloads: the pinned protos, `google.protobuf.Any` packing, and the conversion between
 * unicast routes (prefix, next hop, a few attributes) and the API's `Path` message. Pure apart from
 * reading the proto files once.
 *
 * In the 3.x API a path's NLRI and attributes are `Any` messages (`type.googleapis.com/apipb.<Message>`).
 * `@grpc/proto-loader` leaves them as `{type_url, value}`; the inner messages are encoded with a
 * protobufjs Root loaded from the same files.
 */
import * as path from 'node:path';
import type * as protobuf from 'protobufjs';
import { formatValue, parseCidr, tryParseAddr } from '@underlay/core';

/** The pinned GoBGP v3.10.0 protos (libs/adapters/proto/gobgp; the same path from src/ and dist/). */
export const GOBGP_PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto', 'gobgp');
export const GOBGP_PROTO_FILES = ['gobgp.proto', 'attribute.proto', 'capability.proto'] as const;
export const GOBGP_PACKAGE = 'apipb';
const TYPE_URL_PREFIX = 'type.googleapis.com/';

export type BgpFamily = 'ipv4' | 'ipv6';
export type BgpOrigin = 'igp' | 'egp' | 'incomplete';

/** A unicast route to advertise (AddPath) or withdraw (DeletePath). */
export interface BgpRoute {
  /** CIDR (host bits are cleared). */
  prefix: string;
  /** Next hop; IPv4 unicast with an IPv4 next hop uses NEXT_HOP, everything else MP_REACH_NLRI. */
  nextHop: string;
  origin?: BgpOrigin;
  asPath?: number[];
  med?: number;
  localPref?: number;
  /** Standard communities as `ASN:VALUE`. */
  communities?: string[];
  /** Large communities (RFC 8092) as `GLOBAL:DATA1:DATA2`. */
  largeCommunities?: string[];
}

/** A path read from gobgpd (ListPath, WatchEvent). */
export interface BgpPath extends BgpRoute {
  family: BgpFamily;
  /** Originated by this gobgpd (AddPath, config, CLI), not learned from a peer. */
  local: boolean;
  /** The peer it was learned from (undefined when local). */
  neighbor?: string;
  sourceAsn: number;
  sourceId?: string;
  withdraw: boolean;
  /** Meaningful in ListPath answers only (always false in watch events). */
  best: boolean;
  filtered: boolean;
  stale: boolean;
  nextHopInvalid: boolean;
  /** When gobgpd received or created it. */
  age?: Date;
}

/** `google.protobuf.Any` as proto-loader represents it. */
export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

/** The API's `Family` message, enums as strings (proto-loader `enums: String`). */
export interface ApiFamily {
  afi: string;
  safi: string;
}

/** The API's `Path` message as proto-loader represents it (only the fields used here). */
export interface ApiPath {
  nlri?: AnyMessage | null;
  pattrs?: AnyMessage[];
  age?: { seconds?: number | string; nanos?: number } | null;
  best?: boolean;
  isWithdraw?: boolean;
  family?: ApiFamily | null;
  sourceAsn?: number;
  sourceId?: string;
  filtered?: boolean;
  stale?: boolean;
  neighborIp?: string;
  uuid?: Uint8Array;
  isNexthopInvalid?: boolean;
}

let rootCache: protobuf.Root | undefined;

/** The protobufjs Root of the pinned protos (google/protobuf well-known types come bundled with protobufjs). */
export function gobgpRoot(dir = GOBGP_PROTO_DIR): protobuf.Root {
  if (rootCache && dir === GOBGP_PROTO_DIR) return rootCache;
  // protobufjs loaded on first use (an agent without --bgp-api never needs it).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const root = new (require('protobufjs') as typeof import('protobufjs')).Root();
  // Imports are relative to the proto directory; absolute paths must come back unchanged (protobufjs
  // would otherwise join them twice).
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(dir, target));
  root.loadSync([...GOBGP_PROTO_FILES], { keepCase: false });
  root.resolveAll();
  if (dir === GOBGP_PROTO_DIR) rootCache = root;
  return root;
}

const qualified = (type: string): string => (type.includes('.') ? type : `${GOBGP_PACKAGE}.${type}`);

/** Encodes `value` as the message `type` (e.g. `IPAddressPrefix`) inside an Any. */
export function packAny(type: string, value: Record<string, unknown>): AnyMessage {
  const name = qualified(type);
  const t = gobgpRoot().lookupType(name);
  const err = t.verify(value);
  if (err) throw new TypeError(`gobgp ${name}: ${err}`);
  return { type_url: TYPE_URL_PREFIX + name, value: t.encode(t.fromObject(value)).finish() };
}

/** Decodes an Any into its message type's short name (without `apipb.`) and a plain object (camelCase fields). */
export function unpackAny(a: AnyMessage | { typeUrl?: string; type_url?: string; value?: Uint8Array }): { type: string; value: Record<string, unknown> } {
  const url = ('type_url' in a && a.type_url) || ('typeUrl' in a && a.typeUrl) || '';
  const name = url.slice(url.lastIndexOf('/') + 1);
  if (!name) throw new TypeError('gobgp: an Any without a type_url');
  const t = gobgpRoot().lookupType(name);
  const value = t.toObject(t.decode(a.value ?? new Uint8Array()), { longs: Number, enums: String, defaults: true, arrays: true }) as Record<string, unknown>;
  return { type: name.startsWith(`${GOBGP_PACKAGE}.`) ? name.slice(GOBGP_PACKAGE.length + 1) : name, value };
}

export const familyOfCidr = (cidr: string): BgpFamily => (parseCidr(cidr).family === 4 ? 'ipv4' : 'ipv6');

export function apiFamily(f: BgpFamily): ApiFamily {
  return { afi: f === 'ipv4' ? 'AFI_IP' : 'AFI_IP6', safi: 'SAFI_UNICAST' };
}

/** The CIDR in canonical form (host bits cleared, IPv6 compressed). */
export function canonicalPrefix(prefix: string): string {
  const c = parseCidr(prefix);
  return `${formatValue(c.family, c.network)}/${c.prefix}`;
}

function canonicalAddress(a: string, what: string): { text: string; family: 4 | 6 } {
  const addr = tryParseAddr(a);
  if (!addr) throw new TypeError(`gobgp: invalid ${what} ${JSON.stringify(a)}`);
  return { text: formatValue(addr.family, addr.value), family: addr.family };
}

const ORIGINS: Record<BgpOrigin, number> = { igp: 0, egp: 1, incomplete: 2 };
const ORIGIN_NAMES: BgpOrigin[] = ['igp', 'egp', 'incomplete'];

export function parseCommunity(c: string): number {
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(c);
  const hi = m ? Number(m[1]) : NaN;
  const lo = m ? Number(m[2]) : NaN;
  if (!(hi <= 0xffff && lo <= 0xffff)) throw new TypeError(`gobgp: invalid community ${JSON.stringify(c)} (ASN:VALUE, each 0-65535)`);
  return hi * 0x10000 + lo;
}

export const formatCommunity = (v: number): string => `${Math.floor(v / 0x10000)}:${v % 0x10000}`;

export function parseLargeCommunity(c: string): { globalAdmin: number; localData1: number; localData2: number } {
  const m = /^(\d{1,10}):(\d{1,10}):(\d{1,10})$/.exec(c);
  const parts = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [];
  if (parts.length !== 3 || parts.some((x) => x > 0xffffffff)) {
    throw new TypeError(`gobgp: invalid large community ${JSON.stringify(c)} (GLOBAL:DATA1:DATA2, each 0-4294967295)`);
  }
  return { globalAdmin: parts[0]!, localData1: parts[1]!, localData2: parts[2]! };
}

/** The API `Path` for a route: NLRI `IPAddressPrefix`, ORIGIN, NEXT_HOP or MP_REACH_NLRI, and the optional attributes. */
export function routeToApiPath(r: BgpRoute, opts: { withdraw?: boolean } = {}): ApiPath & { family: ApiFamily } {
  const c = parseCidr(r.prefix);
  const family: BgpFamily = c.family === 4 ? 'ipv4' : 'ipv6';
  const nlriValue = { prefixLen: c.prefix, prefix: formatValue(c.family, c.network) };
  const nlri = packAny('IPAddressPrefix', nlriValue);
  const pattrs: AnyMessage[] = [packAny('OriginAttribute', { origin: ORIGINS[r.origin ?? 'igp'] })];
  if (!opts.withdraw || r.nextHop) {
    const nh = canonicalAddress(r.nextHop, 'next hop');
    if (family === 'ipv4' && nh.family === 4) pattrs.push(packAny('NextHopAttribute', { nextHop: nh.text }));
    else pattrs.push(packAny('MpReachNLRIAttribute', { family: familyValue(family), nextHops: [nh.text], nlris: [nlri] }));
  }
  if (r.asPath && r.asPath.length > 0) pattrs.push(packAny('AsPathAttribute', { segments: [{ type: 2, numbers: r.asPath }] }));
  if (r.med !== undefined) pattrs.push(packAny('MultiExitDiscAttribute', { med: r.med }));
  if (r.localPref !== undefined) pattrs.push(packAny('LocalPrefAttribute', { localPref: r.localPref }));
  if (r.communities && r.communities.length > 0) pattrs.push(packAny('CommunitiesAttribute', { communities: r.communities.map(parseCommunity) }));
  if (r.largeCommunities && r.largeCommunities.length > 0) {
    pattrs.push(packAny('LargeCommunitiesAttribute', { communities: r.largeCommunities.map(parseLargeCommunity) }));
  }
  return { nlri, pattrs, family: apiFamily(family), isWithdraw: opts.withdraw ?? false };
}

/** Family as protobufjs numbers (for messages packed inside an Any, where fromObject also accepts the names). */
function familyValue(f: BgpFamily): { afi: number; safi: number } {
  return { afi: f === 'ipv4' ? 1 : 2, safi: 1 };
}

const num = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : 0);

/**
 * A route from an API `Path`; undefined for anything but IPv4/IPv6 unicast (`IPAddressPrefix` NLRI).
 * Local paths are those without a source peer (gobgpd reports `neighbor_ip` "<nil>" and `source_asn` 0).
 */
export function pathFromApi(p: ApiPath): BgpPath | undefined {
  if (!p.nlri) return undefined;
  let nlri: { type: string; value: Record<string, unknown> };
  try {
    nlri = unpackAny(p.nlri);
  } catch {
    return undefined; // an NLRI type these protos do not know
  }
  if (nlri.type !== 'IPAddressPrefix') return undefined;
  const prefixText = `${String(nlri.value.prefix)}/${num(nlri.value.prefixLen)}`;
  let prefix: string;
  try {
    prefix = canonicalPrefix(prefixText);
  } catch {
    return undefined;
  }
  const family: BgpFamily = prefix.includes(':') ? 'ipv6' : 'ipv4';
  const out: BgpPath = {
    prefix,
    nextHop: '',
    family,
    local: !p.neighborIp || p.neighborIp === '<nil>',
    sourceAsn: num(p.sourceAsn),
    withdraw: p.isWithdraw ?? false,
    best: p.best ?? false,
    filtered: p.filtered ?? false,
    stale: p.stale ?? false,
    nextHopInvalid: p.isNexthopInvalid ?? false,
  };
  if (!out.local) out.neighbor = p.neighborIp;
  if (p.sourceId && p.sourceId !== '<nil>') out.sourceId = p.sourceId;
  if (p.age && (p.age.seconds !== undefined || p.age.nanos !== undefined)) {
    out.age = new Date(num(p.age.seconds) * 1000 + Math.floor(num(p.age.nanos) / 1e6));
  }
  for (const a of p.pattrs ?? []) {
    let attr: { type: string; value: Record<string, unknown> };
    try {
      attr = unpackAny(a);
    } catch {
      continue; // an attribute type these protos do not know: not needed for unicast routing
    }
    const v = attr.value;
    switch (attr.type) {
      case 'OriginAttribute':
        out.origin = ORIGIN_NAMES[num(v.origin)] ?? 'incomplete';
        break;
      case 'NextHopAttribute':
        out.nextHop = String(v.nextHop ?? '');
        break;
      case 'MpReachNLRIAttribute': {
        const hops = (v.nextHops as string[] | undefined) ?? [];
        // RFC 2545: a global address, optionally followed by a link-local one; the global one routes.
        if (hops[0]) out.nextHop = hops[0];
        break;
      }
      case 'AsPathAttribute': {
        const segs = (v.segments as { numbers?: number[] }[] | undefined) ?? [];
        out.asPath = segs.flatMap((s) => (s.numbers ?? []).map(num));
        break;
      }
      case 'MultiExitDiscAttribute':
        out.med = num(v.med);
        break;
      case 'LocalPrefAttribute':
        out.localPref = num(v.localPref);
        break;
      case 'CommunitiesAttribute':
        out.communities = ((v.communities as number[] | undefined) ?? []).map((x) => formatCommunity(num(x)));
        break;
      case 'LargeCommunitiesAttribute':
        out.largeCommunities = ((v.communities as { globalAdmin?: number; localData1?: number; localData2?: number }[] | undefined) ?? []).map(
          (x) => `${num(x.globalAdmin)}:${num(x.localData1)}:${num(x.localData2)}`,
        );
        break;
      default:
        break;
    }
  }
  if (out.nextHop) {
    const nh = tryParseAddr(out.nextHop);
    if (nh) out.nextHop = formatValue(nh.family, nh.value);
  }
  return out;
}
