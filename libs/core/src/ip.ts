/**
 * IPv4/IPv6 address and CIDR math on bigints. Pure: no I/O.
 * An address is { family, value } where value is the address as an unsigned integer.
 */
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

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseV6(s: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const dbl = s.split('::');
  if (dbl.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (it.includes('.')) {
        if (i !== items.length - 1) return undefined;
        const v4 = parseV4(it);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return undefined;
        out.push(parseInt(it, 16));
      }
    }
    return out;
  };
  const head = groups(dbl[0]!);
  const tail = dbl.length === 2 ? groups(dbl[1]!) : [];
  if (!head || !tail) return undefined;
  let all: number[];
  if (dbl.length === 2) {
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return undefined;
    all = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else {
    all = head;
  }
  if (all.length !== 8) return undefined;
  return all.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

export function tryParseAddr(s: string): Addr | undefined {
  const v4 = parseV4(s);
  if (v4 !== undefined) return { family: 4, value: v4 };
  if (s.includes(':')) {
    const v6 = parseV6(s);
    if (v6 !== undefined) return { family: 6, value: v6 };
  }
  return undefined;
}

export function parseAddr(s: string): Addr {
  const a = tryParseAddr(s);
  if (!a) throw new InvalidArgumentError(`invalid IP address: ${JSON.stringify(s)}`);
  return a;
}

export function formatValue(family: Family, v: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 0xffn)).join('.');
  }
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (≥ 2) of zero groups, leftmost on ties.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export const formatAddr = (a: Addr): string => formatValue(a.family, a.value);

const mask = (family: Family, prefix: number): bigint => {
  const total = BigInt(bits(family));
  const host = total - BigInt(prefix);
  return ((1n << total) - 1n) ^ ((1n << host) - 1n);
};

/** Parses "a.b.c.d/n". With strict, host bits must be zero (Docker's --subnet rule). */
export function parseCidr(s: string, opts: { strict?: boolean } = {}): Cidr {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  const addr = m ? tryParseAddr(m[1]!) : undefined;
  const prefix = m ? Number(m[2]) : NaN;
  if (!m || !addr || !(prefix >= 0 && prefix <= bits(addr.family))) {
    throw new InvalidArgumentError(`invalid CIDR: ${JSON.stringify(s)}`);
  }
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
  const c = parseCidr(s);
  const ip = s.slice(0, s.indexOf('/'));
  return { addr: parseAddr(ip), prefix: c.prefix };
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

/** Docker's IPv4-derived MAC (libnetwork genMAC): 02:42 followed by the four address bytes. */
export function macFromIPv4(a: Addr): string {
  if (a.family !== 4) throw new InvalidArgumentError('a MAC can only be derived from an IPv4 address');
  const b = [0x02, 0x42, ...[24n, 16n, 8n, 0n].map((sh) => Number((a.value >> sh) & 0xffn))];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
