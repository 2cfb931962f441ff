/**
 * Link setup: the only module that makes links (routes are routes/index.ts's). Parents (existing links, 802.1q
 * sub-interfaces, dummies) and endpoint links (macvlan/ipvlan slaves). Every action is idempotent.
 */
import { InvalidArgumentError, UnderlayError, dummyParentName, parseVlanParent, type NetworkOptions } from '@underlay/core';

export interface LinkInfoLike {
  name: string;
  index: number;
  kind?: string;
  parentIndex?: number;
}

/** What the agent needs from netlink (implemented by @underlay/adapters' LinkOps). */
export interface LinkOps {
  getLink(name: string): Promise<LinkInfoLike | undefined>;
  listLinks(): Promise<LinkInfoLike[]>;
  createMacvlan(o: { name: string; parent: string; mode: 'private' | 'vepa' | 'bridge' | 'passthru'; mac?: string; up?: boolean }): Promise<unknown>;
  createIpvlan(o: { name: string; parent: string; mode: 'l2' | 'l3' | 'l3s'; flag?: 'bridge' | 'private' | 'vepa'; up?: boolean }): Promise<unknown>;
  createVlan(o: { name: string; parent: string; vlanId: number; up?: boolean }): Promise<unknown>;
  createDummy(o: { name: string; up?: boolean }): Promise<unknown>;
  setUp(name: string): Promise<void>;
  deleteLink(name: string): Promise<boolean>;
  close(): void;
}

/** A link could not be made (libnetwork's texts); `cause` is the kernel's error, whose `retriable` it keeps. */
export class LinkError extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('internal', message, { cause: opts.cause, retriable: opts.cause instanceof UnderlayError && opts.cause.retriable });
    this.name = 'LinkError';
  }
}

const reason = (e: unknown) => (e as Error).message;

/**
 * How a named parent can be had on this host: it exists; it is an 802.1q `name.vid` of an existing link (underlay
 * creates it); or it is missing (`name`: the link that is not there). A malformed `name.vid` throws libnetwork's text.
 */
export async function findParent(
  links: LinkOps,
  parent: string,
): Promise<{ kind: 'existing' } | { kind: 'vlan'; base: string; vlanId: number } | { kind: 'missing'; name: string }> {
  if (await links.getLink(parent)) return { kind: 'existing' };
  if (!parent.includes('.')) return { kind: 'missing', name: parent };
  const { base, vlanId } = parseVlanParent(parent);
  if (!(await links.getLink(base))) return { kind: 'missing', name: base };
  return { kind: 'vlan', base, vlanId };
}

/** Makes sure the network's parent exists; returns its name and whether underlay created it. */
export async function ensureParent(links: LinkOps, networkId: string, o: NetworkOptions): Promise<{ parent: string; created: boolean }> {
  if (!o.parent) {
    const name = dummyParentName(o.type, networkId);
    if (!(await links.getLink(name))) {
      try {
        await links.createDummy({ name, up: true });
      } catch (e) {
        throw new LinkError(`failed to create the dummy parent ${name} for an isolated network: ${reason(e)}`, { cause: e });
      }
    }
    return { parent: name, created: true };
  }
  const found = await findParent(links, o.parent);
  if (found.kind === 'existing') {
    await links.setUp(o.parent).catch(() => {});
    return { parent: o.parent, created: false };
  }
  if (found.kind === 'missing') throw new InvalidArgumentError(`-o parent interface was not found on the host: ${found.name}`);
  try {
    await links.createVlan({ name: o.parent, parent: found.base, vlanId: found.vlanId, up: true });
  } catch (e) {
    throw new LinkError(`failed to create ${o.parent} vlan link: ${reason(e)}`, { cause: e });
  }
  return { parent: o.parent, created: true };
}

/** Removes a parent underlay created: only 802.1q sub-interfaces (name.vid with a parent link) and our own dummies. */
export async function removeCreatedParent(links: LinkOps, name: string): Promise<void> {
  const l = await links.getLink(name);
  if (!l) return;
  const isVlan = l.kind === 'vlan' && l.parentIndex !== undefined && /^[^.]+\.\d+$/.test(name);
  const isOurDummy = l.kind === 'dummy' && /^d[mi]-[0-9a-f]{12}$/.test(name);
  if (isVlan || isOurDummy) await links.deleteLink(name);
}

export interface EndpointLinkSpec {
  name: string;
  parent: string;
  type: 'macvlan' | 'ipvlan';
  macvlanMode: string;
  ipvlanMode: string;
  ipvlanFlag: string;
  mac?: string;
}

export async function createEndpointLink(links: LinkOps, s: EndpointLinkSpec): Promise<void> {
  if (await links.getLink(s.name)) return; // a repeated Join
  if (!(await links.getLink(s.parent))) throw new LinkError(`the requested parent interface ${s.parent} was not found on the Docker host`);
  try {
    if (s.type === 'macvlan') {
      await links.createMacvlan({ name: s.name, parent: s.parent, mode: s.macvlanMode as 'bridge', mac: s.mac });
    } else {
      await links.createIpvlan({ name: s.name, parent: s.parent, mode: s.ipvlanMode as 'l2', flag: s.ipvlanFlag as 'bridge' });
    }
  } catch (e) {
    throw new LinkError(`failed to create the ${s.type} port: ${reason(e)}`, { cause: e });
  }
}
