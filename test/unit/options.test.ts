import { parseNetworkOptions, parseVlanParent, dummyParentName, endpointLinkName } from '@underlay/core';

describe('driver options', () => {
  it('defaults to macvlan bridge', () => {
    expect(parseNetworkOptions({ parent: 'eth1' })).toMatchObject({ type: 'macvlan', parent: 'eth1', macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge' });
    expect(parseNetworkOptions({})).toMatchObject({ parent: undefined });
  });
  it('implies ipvlan from ipvlan options and accepts host_iface', () => {
    expect(parseNetworkOptions({ ipvlan_mode: 'l3', host_iface: 'eth1' })).toMatchObject({ type: 'ipvlan', ipvlanMode: 'l3', parent: 'eth1' });
    expect(parseNetworkOptions({ ipvlan_flag: 'private' })).toMatchObject({ type: 'ipvlan', ipvlanFlag: 'private' });
  });
  it('refuses bad values with libnetwork texts and the allowed values', () => {
    expect(() => parseNetworkOptions({ macvlan_mode: 'x' })).toThrow("requested macvlan mode 'x' is not valid, 'bridge' mode is the macvlan driver default (allowed: bridge, private, vepa, passthru)");
    expect(() => parseNetworkOptions({ ipvlan_mode: 'l4' })).toThrow("requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default");
    expect(() => parseNetworkOptions({ type: 'ipvlan', macvlan_mode: 'bridge' })).toThrow(/macvlan_mode cannot be used with type=ipvlan/);
    expect(() => parseNetworkOptions({ type: 'bridge' })).toThrow(/type=bridge is not valid/);
    expect(() => parseNetworkOptions({ colour: 'blue' })).toThrow(/unknown option "colour": underlay accepts type, parent/);
    expect(() => parseNetworkOptions({ parent: 'lo' })).toThrow('loopback interface is not a valid macvlan parent link');
    expect(() => parseNetworkOptions({ parent: 'a/b' })).toThrow(/invalid interface name/);
    expect(parseNetworkOptions({ 'com.docker.network.driver.mtu': '1400' }).type).toBe('macvlan');
  });
  it('parses VLAN parents with libnetwork texts', () => {
    expect(parseVlanParent('eth0.20')).toEqual({ base: 'eth0', vlanId: 20 });
    expect(() => parseVlanParent('eth0.1.2')).toThrow('required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received eth0.1.2');
    expect(() => parseVlanParent('eth0.x')).toThrow('unable to parse a valid vlan id from: eth0.x (ex. eth0.10 for vlan 10)');
    expect(() => parseVlanParent('eth0.4095')).toThrow('vlan id must be between 1-4094, received: 4095');
  });
  it('names links within 15 characters', () => {
    expect(dummyParentName('macvlan', 'abcdef0123456789')).toBe('dm-abcdef012345');
    expect(endpointLinkName('abcdef0123456789').length).toBeLessThanOrEqual(15);
  });
});
