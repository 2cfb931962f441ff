import {
  addrFromBytes,
  addrToBytes,
  contains,
  formatAddr,
  formatCidr,
  formatValue,
  macFromIPv4,
  overlaps,
  parseAddr,
  parseAddrWithPrefix,
  parseCidr,
  tryParseAddr,
  usableRange,
} from '@underlay/core';

describe('addresses', () => {
  it('round-trips IPv4 and IPv6 text', () => {
    for (const s of ['0.0.0.0', '192.0.2.1', '255.255.255.255']) expect(formatValue(4, parseAddr(s).value)).toBe(s);
    const v6: [string, string][] = [
      ['2001:db8::1', '2001:db8::1'],
      ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['::', '::'],
      ['::1', '::1'],
      ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
      ['2001:db8::ffff:192.0.2.1', '2001:db8::ffff:c000:201'],
      ['1:0:0:1:0:0:0:1', '1:0:0:1::1'],
    ];
    for (const [i, o] of v6) expect(formatValue(6, parseAddr(i).value)).toBe(o);
  });
  it('prints IPv6 as RFC 5952 text', () => {
    const cases: [string, string][] = [
      // 4.2.3: of two equal runs of zeros the first is compressed
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      // 4.2.3: the longest run is compressed
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
      // 4.2.2: a single zero group is not compressed
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      // 4.3: lower case
      ['2001:DB8::ABCD:EF01', '2001:db8::abcd:ef01'],
      // 4.1: no leading zeros
      ['2001:0db8:00a0:0000:0000:0000:0000:0001', '2001:db8:a0::1'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['1:0:0:0:0:0:0:0', '1::'],
      ['fe80:0:0:0:0:0:0:1', 'fe80::1'],
    ];
    for (const [i, o] of cases) expect(formatAddr(parseAddr(i))).toBe(o);
  });
  it('reads embedded IPv4 text, IPv4-mapped and IPv4-compatible, as IPv6', () => {
    const mapped = parseAddr('::ffff:192.0.2.1');
    expect(mapped).toEqual({ family: 6, value: 0xffffc0000201n });
    expect(parseAddr('::FFFF:192.0.2.1')).toEqual(mapped);
    expect(parseAddr('0:0:0:0:0:ffff:192.0.2.1')).toEqual(mapped);
    expect(parseAddr('::ffff:c000:201')).toEqual(mapped);
    expect(formatAddr(mapped)).toBe('::ffff:192.0.2.1');
    // ::a.b.c.d is ::a.b.c.d (as inet_pton reads it), not the IPv4-mapped ::ffff:a.b.c.d
    expect(parseAddr('::192.0.2.1')).toEqual({ family: 6, value: 0xc0000201n });
    expect(parseAddr('64:ff9b::192.0.2.1').value).toBe(0x0064ff9b0000000000000000c0000201n);
  });
  it('refuses the non-standard IPv4 forms inet_aton accepts, and zone indexes', () => {
    for (const s of ['127.1', '0x7f.1', '0x7f.0.0.1', '0177.0.0.1', '2130706433', '127.0.0.01', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.4.5']) {
      expect(tryParseAddr(s)).toBeUndefined();
      expect(() => parseAddr(s)).toThrow(`invalid IP address: ${JSON.stringify(s)}`);
    }
    for (const s of ['::ffff:127.1', '::ffff:0x7f.0.0.1', '::ffff:01.2.3.4', '::ffff:1.2.3.256', '::127.1', 'fe80::1%eth0', 'fe80::1%', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:', ':::1', '12345::1']) {
      expect(tryParseAddr(s)).toBeUndefined();
    }
    expect(tryParseAddr(7 as unknown as string)).toBeUndefined();
  });
  it('converts to and from network-order bytes', () => {
    expect(addrToBytes(parseAddr('192.0.2.1'))).toEqual([192, 0, 2, 1]);
    expect(addrToBytes(parseAddr('2001:db8::1'))).toEqual([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect(addrFromBytes([192, 0, 2, 1])).toEqual(parseAddr('192.0.2.1'));
    expect(addrFromBytes(Buffer.from('20010db8000000000000000000000001', 'hex'))).toEqual(parseAddr('2001:db8::1'));
    expect(() => addrFromBytes([1, 2, 3])).toThrow(/4 or 16 bytes/);
  });
  it('refuses malformed addresses', () => {
    for (const s of ['1.2.3', '1.2.3.256', '01.2.3.4', 'a.b.c.d', '1::2::3', '2001:db8::1::', '12345::', '']) {
      expect(() => parseAddr(s)).toThrow(/invalid IP address/);
    }
  });
});

describe('CIDRs', () => {
  it('parses and normalises', () => {
    expect(formatCidr(parseCidr('192.0.2.77/24'))).toBe('192.0.2.0/24');
    expect(formatCidr(parseCidr('2001:db8:1::5/48'))).toBe('2001:db8:1::/48');
    expect(() => parseCidr('192.0.2.77/24', { strict: true })).toThrow(/host bits are set; did you mean 192.0.2.0\/24/);
    expect(() => parseCidr('192.0.2.0/33')).toThrow(/invalid CIDR/);
    expect(() => parseCidr('192.0.2.0')).toThrow(/invalid CIDR/);
    expect(formatCidr(parseCidr('2001:DB8:0:0::/32'))).toBe('2001:db8::/32');
    expect(formatCidr(parseCidr('::ffff:192.0.2.0/120'))).toBe('::ffff:192.0.2.0/120');
    expect(formatCidr(parseCidr('192.0.2.0/024'))).toBe('192.0.2.0/24');
    for (const s of ['127.1/8', '0x7f.0.0.0/8', '010.0.0.0/8', '::/129', '2001:db8::/-1', '192.0.2.0/0024', '192.0.2.0/', '/24', 'fe80::%eth0/64', '192.0.2.0/24/24']) {
      expect(() => parseCidr(s)).toThrow(`invalid CIDR: ${JSON.stringify(s)}`);
    }
  });
  it('keeps the address of an interface address', () => {
    expect(parseAddrWithPrefix('10.0.0.1/24')).toEqual({ addr: parseAddr('10.0.0.1'), prefix: 24 });
    expect(parseAddrWithPrefix('2001:DB8::1/64')).toEqual({ addr: parseAddr('2001:db8::1'), prefix: 64 });
    expect(() => parseAddrWithPrefix('10.1/24')).toThrow(/invalid CIDR/);
  });
  it('contains and overlaps', () => {
    const a = parseCidr('192.0.2.0/24');
    expect(contains(a, parseAddr('192.0.2.255'))).toBe(true);
    expect(contains(a, parseAddr('192.0.3.0'))).toBe(false);
    expect(contains(a, parseAddr('2001:db8::1'))).toBe(false);
    expect(overlaps(a, parseCidr('192.0.2.128/25'))).toBe(true);
    expect(overlaps(parseCidr('192.0.2.128/25'), a)).toBe(true);
    expect(overlaps(a, parseCidr('192.0.3.0/24'))).toBe(false);
    expect(overlaps(a, parseCidr('::/0'))).toBe(false);
  });
  it('excludes network and broadcast from usable IPv4 ranges', () => {
    const r = usableRange(parseCidr('192.0.2.0/24'));
    expect(formatValue(4, r.first)).toBe('192.0.2.1');
    expect(formatValue(4, r.last)).toBe('192.0.2.254');
    const p2p = usableRange(parseCidr('192.0.2.0/31'));
    expect(p2p.last - p2p.first).toBe(1n);
    const v6 = usableRange(parseCidr('2001:db8::/64'));
    expect(formatValue(6, v6.first)).toBe('2001:db8::1');
    expect(formatValue(6, v6.last)).toBe('2001:db8::ffff:ffff:ffff:ffff');
  });
  it('derives the MAC from an IPv4 address as libnetwork does', () => {
    expect(macFromIPv4(parseAddr('192.0.2.2'))).toBe('02:42:c0:00:02:02');
  });
});

describe('IPv4 text read and printed by hand (ip.ts parseV4/formatV4) against ipaddr.js', () => {
  // ipaddr.js is the reference: the project's IPv4 rule is its isValidFourPartDecimal, the value its parse.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ipaddr = require('ipaddr.js') as typeof import('ipaddr.js');
  const refAddr = (s: string): bigint | undefined => {
    if (!ipaddr.IPv4.isValidFourPartDecimal(s)) return undefined;
    return ipaddr.IPv4.parse(s).toByteArray().reduce((v, b) => (v << 8n) | BigInt(b), 0n);
  };
  const refCidr = (s: string): { value: bigint; prefix: number } | undefined => {
    const slash = s.lastIndexOf('/');
    if (slash <= 0) return undefined;
    const value = refAddr(s.slice(0, slash));
    if (value === undefined || !/^\d{1,3}$/.test(s.slice(slash + 1))) return undefined;
    try {
      return { value, prefix: ipaddr.IPv4.parseCIDR(s)[1] };
    } catch {
      return undefined;
    }
  };
  // A small deterministic generator: parts from a list of tricky pieces, joined by tricky separators.
  let seed = 12345;
  // mulberry32: 32-bit steps (Math.imul), exact in a double.
  const rnd = (n: number): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
  const good = ['0', '1', '9', '10', '99', '100', '199', '200', '249', '250', '255'];
  const bad = ['00', '01', '010', '0255', '256', '299', '999', '1000', '', 'a', '0x1', '-1', '+1', ' 1', '1 ', '１', '25５'];
  const texts = ['1.2.3.4', '0.0.0.0', '255.255.255.255', '1.2.3', '1.2.3.4.5', '1..2.3', '.1.2.3', '1.2.3.4.', '127.1', '2130706433', '', '.', '...', '1.2.3.4 '];
  // Mostly four parts, each good four times in five: about 40% of the texts are addresses, the others near misses.
  for (let i = 0; i < 4000; i++) {
    const n = rnd(4) === 0 ? 1 + rnd(6) : 4;
    texts.push(Array.from({ length: n }, () => (rnd(5) === 0 ? bad[rnd(bad.length)] : good[rnd(good.length)])).join(rnd(40) === 0 ? '..' : '.'));
  }

  it('generates addresses and near misses alike', () => {
    const valid = texts.filter((s) => refAddr(s) !== undefined).length;
    expect(valid).toBeGreaterThan(texts.length * 0.25);
    expect(valid).toBeLessThan(texts.length * 0.75);
  });

  it('reads an address exactly as ipaddr.js under the project rule', () => {
    for (const s of texts) expect([s, tryParseAddr(s)?.value]).toEqual([s, refAddr(s)]);
  });

  it('reads a CIDR exactly as ipaddr.js under the project rule', () => {
    const lens = ['0', '8', '08', '008', '24', '32', '33', '99', '0032', '', 'x', '-1', '1e1', ' 8'];
    for (const s of texts.slice(0, 1500)) {
      for (const len of lens) {
        const t = `${s}/${len}`;
        const ref = refCidr(t);
        let got: { value: bigint; prefix: number } | undefined;
        try {
          const p = parseAddrWithPrefix(t);
          got = { value: p.addr.value, prefix: p.prefix };
        } catch {
          got = undefined;
        }
        expect([t, got]).toEqual([t, ref]);
      }
    }
  });

  it('prints every address as ipaddr.js does', () => {
    const values = [0n, 1n, 255n, 256n, 0x7f000001n, 0xc0000201n, 0xffffffffn];
    for (let i = 0; i < 2000; i++) values.push(BigInt(rnd(2 ** 16)) * 65536n + BigInt(rnd(2 ** 16)));
    for (const v of values) {
      const ref = ipaddr.fromByteArray([Number((v >> 24n) & 0xffn), Number((v >> 16n) & 0xffn), Number((v >> 8n) & 0xffn), Number(v & 0xffn)]).toString();
      expect(formatValue(4, v)).toBe(ref);
      expect(parseAddr(ref).value).toBe(v);
    }
  });
});
