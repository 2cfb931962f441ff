/**
 * IPv4/IPv6 addresses and CIDRs. ipaddr.js parses, validates and prints the text (IPv6 as RFC 5952 text:
 * lower case, no leading zeros, the longest run of zero groups compressed); the range arithmetic the
 * allocator needs is done here on bigints. Pure: no I/O.
 * An address is { family, value } where value is the address as an unsigned integer.
 *
 * The text accepted is stricter than ipaddr.js's own parse:
 * - IPv4 only as four decimal parts without leading zeros ("192.0.2.1"). ipaddr.js also reads inet_aton's
 *   forms ("127.1", "0x7f.0.0.1", "0177.0.0.1", "2130706433"), which name another address than they seem to.
 * - IPv6 without a zone index ("fe80::1%eth0"), and an embedded IPv4 part (RFC 4291 2.2, e.g. the IPv4-mapped
 *   "::ffff:192.0.2.1") only in that same four-part form.
 * - "::a.b.c.d" (IPv4-compatible, RFC 4291 2.5.5.1) is ::a.b.c.d, as inet_pton and the kernel read it;
 *   ipaddr.js alone would read it as the IPv4-mapped ::ffff:a.b.c.d.
 * An IPv4-mapped address stays an IPv6 address (family 6), as it is on the wire.
 *
 * IPv4 text is read and printed here by hand (`parseV4`, `formatV4`), to the same rule: every event's address or
 * block is parsed by the fold on the controller and on every agent, and by the agents' route keys; through ipaddr.js
 * that is two regular expressions, a byte array and four BigInt steps per address, 10% of what 1,000 simulated
 * agents allocated (bench:scale's heap profile). test/unit/ip.test.ts checks both against ipaddr.js.
 */
import ipaddr from 'ipaddr.js';

import { InvalidArgumentError } from './errors.js';

export type Family = 4 | 6;

export interface Addr {
  readonly family: Family;
  readonly value: bigint;
}

export interface Cidr {
  readonly family: Family;
  /** Network address (host bits zero). */
  readonly network: bigint;
  readonly prefix: number;
}

export const bits = (family: Family): number => (family === 4 ? 32 : 128);

const isFourPartDecimal = (s: string): boolean => ipaddr.IPv4.isValidFourPartDecimal(s);

/** The text to hand to ipaddr.js for an address the project accepts (see the header), else undefined. */
function strictText(s: string): string | undefined {
  if (typeof s !== 'string') return undefined;
  // Each family's validator only sees text that could be of that family: ipaddr.js answers "no" by throwing, which is slow.
  if (!s.includes(':')) return isFourPartDecimal(s) ? s : undefined;
  if (s.includes('%')) return undefined;
  if (!s.includes('.')) return s;
  const v4 = s.slice(s.lastIndexOf(':') + 1);
  if (!isFourPartDecimal(v4)) return undefined;
  // ipaddr.js reads "::a.b.c.d" as ::ffff:a.b.c.d; "::0:a.b.c.d" is the same address as "::a.b.c.d" in its other grammar.
  return s === `::${v4}` ? `::0:${v4}` : s;
}

function parseIp(s: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  const t = strictText(s);
  if (t === undefined) return undefined;
  try {
    return t.includes(':') ? ipaddr.IPv6.parse(t) : ipaddr.IPv4.parse(t);
  } catch {
    return undefined;
  }
}

/**
 * Four decimal parts without leading zeros, each 0-255 (ipaddr.js's isValidFourPartDecimal and parse): the address as
 * a number, or -1.
 */
function parseV4(s: string, from = 0, to = s.length): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = from; i <= to; i++) {
    const c = i < to ? s.charCodeAt(i) : 46; // a '.' after the last part ends it
    if (c === 46) {
      if (digits === 0 || parts === 4) return -1;
      value = value * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1; // a leading zero
      part = part * 10 + (c - 48);
      if (part > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  return parts === 4 ? value : -1;
}

/** Dotted decimal of an IPv4 address given as a number. */
const formatV4 = (n: number): string => `${(n >>> 24) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;

function toAddr(ip: ipaddr.IPv4 | ipaddr.IPv6): Addr {
  return addrFromBytes(ip.toByteArray());
}

function toIp(family: Family, v: bigint): ipaddr.IPv4 | ipaddr.IPv6 {
  return ipaddr.fromByteArray(valueBytes(family, v));
}

/** The address's bytes in network order (4 or 16). */
function valueBytes(family: Family, v: bigint): number[] {
  const n = family === 4 ? 4 : 16;
  const out = new Array<number>(n);
  for (let i = n - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** The address as the bytes the wire carries (network order): 4 for IPv4, 16 for IPv6. */
export const addrToBytes = (a: Addr): number[] => valueBytes(a.family, a.value);

/** Network-order bytes (4 → IPv4, 16 → IPv6) as an address; throws InvalidArgumentError for another length. */
export function addrFromBytes(b: ArrayLike<number>): Addr {
  if (b.length !== 4 && b.length !== 16) {
    throw new InvalidArgumentError(`an IP address is 4 or 16 bytes, not ${b.length}`);
  }
  let v = 0n;
  for (let i = 0; i < b.length; i++) v = (v << 8n) | BigInt(b[i]! & 0xff);
  return { family: b.length === 4 ? 4 : 6, value: v };
}

export function tryParseAddr(s: string): Addr | undefined {
  if (typeof s === 'string' && !s.includes(':')) {
    const n = parseV4(s);
    return n < 0 ? undefined : { family: 4, value: BigInt(n) };
  }
  const ip = parseIp(s);
  return ip && toAddr(ip);
}

export function parseAddr(s: string): Addr {
  const a = tryParseAddr(s);
  if (!a) throw new InvalidArgumentError(`invalid IP address: ${JSON.stringify(s)}`);
  return a;
}

/** The address as text: IPv4 dotted decimal, IPv6 as RFC 5952 (ipaddr.js's toRFC5952String). */
export function formatValue(family: Family, v: bigint): string {
  if (family === 4 && v >= 0n && v <= 0xffffffffn) return formatV4(Number(v));
  const ip = toIp(family, v);
  if (ip.kind() !== 'ipv6') return ip.toString();
  const v6 = ip as ipaddr.IPv6;
  // RFC 5952 section 5 (and iproute2): an IPv4-mapped address keeps its IPv4 part in dotted decimal.
  return v6.isIPv4MappedAddress() ? `::ffff:${v6.toIPv4Address().toString()}` : v6.toRFC5952String();
}

export const formatAddr = (a: Addr): string => formatValue(a.family, a.value);

const mask = (family: Family, prefix: number): bigint => {
  const total = BigInt(bits(family));
  const host = total - BigInt(prefix);
  return ((1n << total) - 1n) ^ ((1n << host) - 1n);
};

/** "addr/len" split into the address (strictly parsed, see the header) and the prefix length, checked by ipaddr.js's parseCIDR. */
function tryParseWithPrefix(s: string): { addr: Addr; prefix: number } | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.lastIndexOf('/');
  if (slash > 0 && !s.includes(':')) {
    // IPv4: the prefix as ipaddr.js's parseCIDR takes it (1 to 3 digits, at most 32; "/08" is 8).
    const n = parseV4(s, 0, slash);
    const lenText = s.slice(slash + 1);
    const prefix = lenText.length >= 1 && lenText.length <= 3 && /^\d+$/.test(lenText) ? Number(lenText) : 33;
    return n < 0 || prefix > 32 ? undefined : { addr: { family: 4, value: BigInt(n) }, prefix };
  }
  const text = slash > 0 ? strictText(s.slice(0, slash)) : undefined;
  const len = s.slice(slash + 1);
  if (text === undefined || !/^\d{1,3}$/.test(len)) return undefined;
  try {
    const [ip, prefix] = text.includes(':') ? ipaddr.IPv6.parseCIDR(`${text}/${len}`) : ipaddr.IPv4.parseCIDR(`${text}/${len}`);
    return { addr: toAddr(ip), prefix };
  } catch {
    return undefined;
  }
}

/** Parses "a.b.c.d/n" or "x::y/n". With strict, host bits must be zero (Docker's --subnet rule). */
export function parseCidr(s: string, opts: { strict?: boolean } = {}): Cidr {
  const p = tryParseWithPrefix(s);
  if (!p) throw new InvalidArgumentError(`invalid CIDR: ${JSON.stringify(s)}`);
  const { addr, prefix } = p;
  const network = addr.value & mask(addr.family, prefix);
  if (opts.strict && network !== addr.value) {
    throw new InvalidArgumentError(
      `invalid subnet ${s}: host bits are set; did you mean ${formatValue(addr.family, network)}/${prefix}?`,
    );
  }
  return { family: addr.family, network, prefix };
}

/** Parses "a.b.c.d/n" keeping the address (for interface addresses such as Docker's Gateway "10.0.0.1/24"). */
export function parseAddrWithPrefix(s: string): { addr: Addr; prefix: number } {
  const p = tryParseWithPrefix(s);
  if (!p) throw new InvalidArgumentError(`invalid CIDR: ${JSON.stringify(s)}`);
  return p;
}

export const formatCidr = (c: Cidr): string => `${formatValue(c.family, c.network)}/${c.prefix}`;

export const size = (c: Cidr): bigint => 1n << BigInt(bits(c.family) - c.prefix);
export const lastAddr = (c: Cidr): bigint => c.network + size(c) - 1n;

export function contains(c: Cidr, a: Addr): boolean {
  return c.family === a.family && (a.value & mask(c.family, c.prefix)) === c.network;
}

/** True when `inner` lies entirely inside `outer`. */
export function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return inner.family === outer.family && inner.prefix >= outer.prefix && contains(outer, { family: inner.family, value: inner.network });
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && (cidrWithin(a, b) || cidrWithin(b, a));
}

/**
 * The range of addresses a pool may hand out: IPv4 excludes the network and broadcast
 * addresses (except /31 and /32, RFC 3021); IPv6 excludes the subnet-router anycast address (::0 of the subnet).
 */
export function usableRange(c: Cidr): { first: bigint; last: bigint } {
  const last = lastAddr(c);
  if (c.family === 4) {
    if (c.prefix >= 31) return { first: c.network, last };
    return { first: c.network + 1n, last: last - 1n };
  }
  if (c.prefix >= 127) return { first: c.network, last };
  return { first: c.network + 1n, last };
}

/** A point-to-point subnet (IPv4 /31, IPv6 /127; RFC 3021, RFC 6164): two addresses, both usable, no gateway of its own. */
export const isPointToPoint = (c: Cidr): boolean => c.prefix === (c.family === 4 ? 31 : 127);

/** Docker's IPv4-derived MAC (libnetwork genMAC): 02:42 followed by the four address bytes. */
export function macFromIPv4(a: Addr): string {
  if (a.family !== 4) throw new InvalidArgumentError('a MAC can only be derived from an IPv4 address');
  const b = [0x02, 0x42, ...addrToBytes(a)];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
