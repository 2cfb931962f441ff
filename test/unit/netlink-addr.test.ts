/**
 * Address text at the netlink edge: route encoders read addresses with @underlay/core's parser (ipaddr.js)
 * and print kernel bytes back as @underlay/core prints them. No socket, no kernel.
 */
import { decodeRouteMessage } from '../../libs/adapters/src/netlink/route-decode.js';
import { addrBytes, formatAddrBytes, parseRouteDst } from '../../libs/adapters/src/netlink/route-encode.js';

const hex = (b: Buffer) => b.toString('hex');

describe('netlink address text', () => {
  it('reads IPv4, IPv6 and IPv4-mapped text into network-order bytes', () => {
    expect(addrBytes('t', '192.0.2.1')).toEqual({ family: 4, bytes: Buffer.from([192, 0, 2, 1]) });
    expect(hex(addrBytes('t', '2001:DB8::1').bytes)).toBe('20010db8000000000000000000000001');
    expect(hex(addrBytes('t', '::ffff:192.0.2.1').bytes)).toBe('00000000000000000000ffffc0000201');
    expect(hex(addrBytes('t', '::192.0.2.1').bytes)).toBe('000000000000000000000000c0000201');
    // A zone index is not part of the address netlink carries.
    expect(addrBytes('t', 'fe80::1%eth0')).toEqual(addrBytes('t', 'fe80::1'));
  });

  it('refuses the forms inet_aton accepts and other non-addresses, with EINVAL', () => {
    for (const s of ['127.1', '0x7f.0.0.1', '0177.0.0.1', '2130706433', '::ffff:127.1', '01.2.3.4', '', 'nope', '1:2:3:4:5:6:7:8:9']) {
      expect(() => addrBytes('addRoute', s)).toThrow(expect.objectContaining({ errno: 'EINVAL', message: `addRoute: ${JSON.stringify(s)} is not an IP address` }));
    }
    expect(() => parseRouteDst('t', '10.1/16')).toThrow(/not an IP address/);
  });

  it('prints kernel bytes as RFC 5952 text', () => {
    const b = (h: string) => Buffer.from(h, 'hex');
    expect(formatAddrBytes(b('c0000201'))).toBe('192.0.2.1');
    expect(formatAddrBytes(b('20010db8000000000001000000000001'))).toBe('2001:db8::1:0:0:1');
    expect(formatAddrBytes(b('20010db8000000010000000000000001'))).toBe('2001:db8:0:1::1');
    expect(formatAddrBytes(b('00000000000000000000000000000000'))).toBe('::');
    expect(formatAddrBytes(b('00000000000000000000ffffc0000201'))).toBe('::ffff:192.0.2.1');
    expect(() => formatAddrBytes(b('c00002'))).toThrow(RangeError);
    expect(() => formatAddrBytes(b('20010db8'.padEnd(30, '0')))).toThrow(RangeError);
  });

  it('parses route destinations and keeps RFC 5952 text through a decoded message', () => {
    const d = parseRouteDst('t', '2001:DB8:0:0:1::/80');
    expect(d.family).toBe(6);
    expect(d.prefix).toBe(80);
    // rtmsg (family AF_INET6, dst_len 80) followed by RTA_DST
    const rtmsg = Buffer.from([10, 80, 0, 0, 254, 201, 0, 1, 0, 0, 0, 0]);
    const rta = Buffer.concat([Buffer.from([20, 0, 1, 0]), d.bytes]);
    expect(decodeRouteMessage(Buffer.concat([rtmsg, rta]))?.dst).toBe('2001:db8:0:0:1::/80');
  });
});
