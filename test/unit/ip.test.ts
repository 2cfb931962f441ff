import { contains, formatCidr, formatValue, macFromIPv4, overlaps, parseAddr, parseCidr, usableRange } from '@underlay/core';

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
