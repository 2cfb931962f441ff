/**
 * Public types of the rtnetlink link adapter (see ./link-ops.ts for the implementation).
 *
 * Everything here acts on the network namespace of the process that opened the LinkOps
 * (a netlink socket is bound to its creator's netns; Node cannot setns()).
 */

export type MacvlanMode = 'private' | 'vepa' | 'bridge' | 'passthru';
export type IpvlanMode = 'l2' | 'l3' | 'l3s';
/** ipvlan port flag; 'bridge' is the kernel default (no flag bits set). */
export type IpvlanFlag = 'bridge' | 'private' | 'vepa';

export interface LinkInfo {
  /** ifindex inside the namespace of the LinkOps' socket. */
  index: number;
  name: string;
  /** IFLA_INFO_KIND ('macvlan', 'ipvlan', 'vlan', 'veth', 'dummy', 'bridge', …); absent for physical NICs and lo. */
  kind?: string;
  /**
   * IFLA_LINK: the lower device's ifindex (macvlan/ipvlan/vlan parent, veth peer). Absent when the
   * kernel omits it (link has no lower device). When `parentNetnsId` is set, the index refers to a
   * device in ANOTHER namespace (e.g. a veth peer that was moved away), not to one in this namespace.
   */
  parentIndex?: number;
  /** IFLA_LINK_NETNSID, only present when the lower device lives in a different network namespace. */
  parentNetnsId?: number;
  /** Administrative state (IFF_UP), not carrier. */
  up: boolean;
  /** Hardware address as lower-case aa:bb:cc:dd:ee:ff; only set for 6-byte (Ethernet-like) addresses. */
  mac?: string;
  mtu?: number;
  /** kind 'vlan': IFLA_VLAN_ID. */
  vlanId?: number;
  /** kind 'macvlan': IFLA_MACVLAN_MODE (undefined for modes outside MacvlanMode, e.g. 'source'). */
  macvlanMode?: MacvlanMode;
  /** kind 'ipvlan': IFLA_IPVLAN_MODE. */
  ipvlanMode?: IpvlanMode;
  /** kind 'ipvlan': IFLA_IPVLAN_FLAGS (only set when the kernel reports the attribute). */
  ipvlanFlag?: IpvlanFlag;
}

export interface CreateMacvlanOptions {
  name: string;
  parent: string;
  mode: MacvlanMode;
  /** Unicast MAC aa:bb:cc:dd:ee:ff; the kernel picks a random one when omitted. */
  mac?: string;
  /** Bring the link up atomically with its creation (same as `ip link add … up`). */
  up?: boolean;
}

export interface CreateIpvlanOptions {
  name: string;
  parent: string;
  mode: IpvlanMode;
  /** Defaults to 'bridge' (flags 0), which is what iproute2 sends when no flag is given. */
  flag?: IpvlanFlag;
  up?: boolean;
}

export interface CreateVlanOptions {
  name: string;
  parent: string;
  /** 802.1Q VLAN id, 0..4094 (same range the kernel accepts). */
  vlanId: number;
  up?: boolean;
}

export interface CreateDummyOptions {
  name: string;
  up?: boolean;
}

export interface LinkOps {
  /** undefined when no link has that name. Throws NetlinkError('EINVAL') for a syntactically invalid name. */
  getLink(name: string): Promise<LinkInfo | undefined>;
  getLinkByIndex(index: number): Promise<LinkInfo | undefined>;
  listLinks(): Promise<LinkInfo[]>;
  createMacvlan(o: CreateMacvlanOptions): Promise<LinkInfo>;
  createIpvlan(o: CreateIpvlanOptions): Promise<LinkInfo>;
  createVlan(o: CreateVlanOptions): Promise<LinkInfo>;
  createDummy(o: CreateDummyOptions): Promise<LinkInfo>;
  /** Sets IFF_UP. Throws NetlinkError('ENODEV') when the link does not exist. */
  setUp(name: string): Promise<void>;
  /** Idempotent: returns false when no such link exists. */
  deleteLink(name: string): Promise<boolean>;
  /** Closes the socket; idempotent. In-flight and later calls reject with NetlinkError('EBADF'). */
  close(): void;
}

export interface LinkOpsOptions {
  /** Per-request timeout in milliseconds (default 10000). A timeout rejects with NetlinkError('ETIMEDOUT'). */
  timeoutMs?: number;
}
