/**
 * Driver options (`docker network create -o key=value`), with libnetwork's names, defaults and error texts.
 * Pure: no I/O.
 */
import { InvalidArgumentError } from './errors.js';
import { LIMITS } from './limits.js';

export const MACVLAN_MODES = ['bridge', 'private', 'vepa', 'passthru'] as const;
export const IPVLAN_MODES = ['l2', 'l3', 'l3s'] as const;
export const IPVLAN_FLAGS = ['bridge', 'private', 'vepa'] as const;
export const DRIVER_TYPES = ['macvlan', 'ipvlan'] as const;
export type MacvlanMode = (typeof MACVLAN_MODES)[number];
export type IpvlanMode = (typeof IPVLAN_MODES)[number];
export type IpvlanFlag = (typeof IPVLAN_FLAGS)[number];
export type DriverType = (typeof DRIVER_TYPES)[number];

/** Docker's IpamDriver option that marks the gateway request (the value of RequestAddress's `RequestAddressType`). */
export const GATEWAY_REQUEST_TYPE = 'com.docker.network.gateway';
/** The endpoint's MAC address among RequestAddress's options. */
export const MAC_OPTION = 'com.docker.network.endpoint.macaddress';
/** Address spaces underlay's IpamDriver announces; pools outside them did not come from underlay. */
export const LOCAL_ADDRESS_SPACE = 'underlay';
export const GLOBAL_ADDRESS_SPACE = 'underlay-global';

export const KNOWN_OPTIONS = ['type', 'parent', 'host_iface', 'macvlan_mode', 'ipvlan_mode', 'ipvlan_flag', 'host_access'] as const;

export interface NetworkOptions {
  type: DriverType;
  /** The parent link as the user named it; undefined means an isolated network on a dummy parent. */
  parent?: string;
  macvlanMode: MacvlanMode;
  ipvlanMode: IpvlanMode;
  ipvlanFlag: IpvlanFlag;
  internal: boolean;
  ipv6: boolean;
  /**
   * `-o host_access=true` (underlay's own, off by default as Docker's drivers have none): the host gets a shim link
   * on the parent with an address from the network's pool, so it and its containers reach each other.
   */
  hostAccess: boolean;
}

const oneOf = <T extends string>(values: readonly T[], v: string): v is T => (values as readonly string[]).includes(v);

/** Keys Docker or underlay itself may put among the driver options; never refused. */
const passThrough = (key: string) => key.startsWith('com.docker.') || key.startsWith('underlay.');

export function parseNetworkOptions(
  generic: Readonly<Record<string, string>>,
  flags: { internal?: boolean; ipv6?: boolean } = {},
): NetworkOptions {
  const keys = Object.keys(generic);
  if (keys.length > LIMITS.mapEntries) {
    throw new InvalidArgumentError(`too many options (${keys.length}): a network takes at most ${LIMITS.mapEntries}`);
  }
  for (const key of keys) {
    if (key.length > LIMITS.name) throw new InvalidArgumentError(`option name ${JSON.stringify(key.slice(0, 32))}… is longer than ${LIMITS.name} characters`);
    const v = String(generic[key]);
    if (v.length > LIMITS.optionValue) throw new InvalidArgumentError(`option ${key} is longer than ${LIMITS.optionValue} characters`);
  }
  for (const key of keys) {
    if (!oneOf(KNOWN_OPTIONS, key) && !passThrough(key)) {
      throw new InvalidArgumentError(`unknown option ${JSON.stringify(key)}: underlay accepts ${KNOWN_OPTIONS.join(', ')}`);
    }
  }
  const get = (k: string): string | undefined => {
    const v = generic[k];
    return v === undefined ? undefined : String(v);
  };
  let type: DriverType;
  const t = get('type');
  if (t !== undefined) {
    if (!oneOf(DRIVER_TYPES, t)) throw new InvalidArgumentError(`option type=${t} is not valid: use type=macvlan (the default) or type=ipvlan`);
    type = t;
  } else {
    type = get('ipvlan_mode') !== undefined || get('ipvlan_flag') !== undefined ? 'ipvlan' : 'macvlan';
  }
  if (type === 'ipvlan' && get('macvlan_mode') !== undefined) {
    throw new InvalidArgumentError('option macvlan_mode cannot be used with type=ipvlan: use ipvlan_mode (l2, l3, l3s) and ipvlan_flag (bridge, private, vepa)');
  }
  if (type === 'macvlan' && (get('ipvlan_mode') !== undefined || get('ipvlan_flag') !== undefined)) {
    throw new InvalidArgumentError('options ipvlan_mode and ipvlan_flag need type=ipvlan');
  }
  const mm = get('macvlan_mode') ?? 'bridge';
  if (!oneOf(MACVLAN_MODES, mm)) {
    throw new InvalidArgumentError(`requested macvlan mode '${mm}' is not valid, 'bridge' mode is the macvlan driver default (allowed: ${MACVLAN_MODES.join(', ')})`);
  }
  const im = get('ipvlan_mode') ?? 'l2';
  if (!oneOf(IPVLAN_MODES, im)) {
    throw new InvalidArgumentError(`requested ipvlan mode '${im}' is not valid, 'l2' mode is the ipvlan driver default (allowed: ${IPVLAN_MODES.join(', ')})`);
  }
  const fl = get('ipvlan_flag') ?? 'bridge';
  if (!oneOf(IPVLAN_FLAGS, fl)) {
    throw new InvalidArgumentError(`requested ipvlan flag '${fl}' is not valid, 'bridge' is the ipvlan driver default (allowed: ${IPVLAN_FLAGS.join(', ')})`);
  }
  const p = get('parent');
  const hi = get('host_iface');
  if (p !== undefined && hi !== undefined && p !== hi) {
    throw new InvalidArgumentError(`options parent=${p} and host_iface=${hi} disagree: give one of them`);
  }
  const ha = get('host_access');
  if (ha !== undefined && ha !== 'true' && ha !== 'false') {
    throw new InvalidArgumentError(`option host_access=${ha} is not valid: use host_access=true or host_access=false (the default)`);
  }
  const hostAccess = ha === 'true';
  if (hostAccess && type === 'macvlan' && mm !== 'bridge') {
    throw new InvalidArgumentError(`option host_access=true needs macvlan_mode=bridge (the default): in mode ${mm} the host's shim link cannot reach the containers`);
  }
  if (hostAccess && type === 'ipvlan' && fl !== 'bridge') {
    throw new InvalidArgumentError(`option host_access=true needs ipvlan_flag=bridge (the default): with ${fl} the host's shim link cannot reach the containers`);
  }
  const parent = p ?? hi;
  if (parent === 'lo') throw new InvalidArgumentError(`loopback interface is not a valid ${type} parent link`);
  if (parent !== undefined && parent !== '') validateLinkName(parent);
  return {
    type,
    parent: parent === '' ? undefined : parent,
    macvlanMode: mm,
    ipvlanMode: im,
    ipvlanFlag: fl,
    internal: flags.internal ?? false,
    ipv6: flags.ipv6 ?? false,
    hostAccess,
  };
}

/** Linux interface names: 1-15 bytes, no '/', ':', whitespace. */
export function validateLinkName(name: string): void {
  if (name.length < 1 || name.length > 15 || /[\s/:]/.test(name) || name === '.' || name === '..') {
    throw new InvalidArgumentError(`invalid interface name ${JSON.stringify(name)}: 1-15 characters, no spaces, "/" or ":"`);
  }
}

/** Splits `eth0.20` into its base link and VLAN id, with libnetwork's error texts. */
export function parseVlanParent(name: string): { base: string; vlanId: number } {
  const parts = name.split('.');
  if (parts.length !== 2 || !parts[0]) {
    throw new InvalidArgumentError(`required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received ${name}`);
  }
  if (!/^\d+$/.test(parts[1]!)) throw new InvalidArgumentError(`unable to parse a valid vlan id from: ${name} (ex. eth0.10 for vlan 10)`);
  const vlanId = Number(parts[1]);
  if (vlanId < 1 || vlanId > 4094) throw new InvalidArgumentError(`vlan id must be between 1-4094, received: ${vlanId}`);
  return { base: parts[0], vlanId };
}

/** Docker's own names for isolated parents: dm-<12 of id> (macvlan), di-<12 of id> (ipvlan). */
export const dummyParentName = (type: DriverType, networkId: string): string =>
  `${type === 'macvlan' ? 'dm' : 'di'}-${networkId.slice(0, 12)}`;

/** Host-side name of an endpoint's link before Docker moves it into the container: deterministic, so retries find it. */
export const endpointLinkName = (endpointId: string): string => `ul${endpointId.slice(0, 11)}`;
/** True for a name endpointLinkName makes (Docker's endpoint ids are hex). */
export const isEndpointLinkName = (name: string): boolean => /^ul[0-9a-f]{11}$/.test(name);

/** The host's shim link on a host_access network: `ulh` and the first 12 hex of the network id (15 characters). */
export const hostShimName = (networkId: string): string => `ulh${networkId.slice(0, 12)}`;
/** True for a name hostShimName makes. */
export const isHostShimName = (name: string): boolean => /^ulh[0-9a-f]{12}$/.test(name);
