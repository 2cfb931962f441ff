/**
 * The agent's local store: what this host's driver knows about its networks and endpoints, kept as
 * one JSON file per object under the state directory (written atomically), so a restarted agent
 * knows what it made. Like libnetwork's macvlan_store.go.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';

export const NetworkRecord = z.object({
  id: z.string(),
  type: z.enum(['macvlan', 'ipvlan']),
  /** The parent as the user named it (may be undefined: a dummy parent). */
  requestedParent: z.string().optional(),
  /** The link actually used as parent on this host. */
  parent: z.string(),
  /** underlay created the parent (802.1q sub-interface or dummy) and deletes it with its last network. */
  createdParent: z.boolean(),
  macvlanMode: z.string(),
  ipvlanMode: z.string(),
  ipvlanFlag: z.string(),
  internal: z.boolean(),
  ipv4: z.array(z.object({ pool: z.string(), gateway: z.string().optional() })),
  ipv6: z.array(z.object({ pool: z.string(), gateway: z.string().optional() })),
  /** The controller's pools this network uses. */
  poolIds: z.array(z.string()).default([]),
});
export type NetworkRecord = z.infer<typeof NetworkRecord>;

export const EndpointRecord = z.object({
  id: z.string(),
  networkId: z.string(),
  address: z.string().optional(),
  addressV6: z.string().optional(),
  mac: z.string().optional(),
  /** Host-side link name, set at Join. */
  srcName: z.string().optional(),
});
export type EndpointRecord = z.infer<typeof EndpointRecord>;

/** `<poolId>|<address>` → the allocation's seq. */
export const AllocRecord = z.record(z.string(), z.object({ seq: z.number() }));
export type AllocInfo = { poolId: string; address: string; seq: number };

function writeAtomic(file: string, data: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(data, null, 2));
  fs.renameSync(tmp, file);
}

function readDir<T>(dir: string, schema: z.ZodType<T>): Map<string, T> {
  const out = new Map<string, T>();
  if (!fs.existsSync(dir)) return out;
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.json')) continue;
    const rec = schema.parse(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
    out.set(f.slice(0, -5), rec);
  }
  return out;
}

export class LocalStore {
  readonly networks: Map<string, NetworkRecord>;
  readonly endpoints: Map<string, EndpointRecord>;
  /** `<poolId>|<address>` → allocation seq (so releases carry it and CreateEndpoint can bind it). */
  readonly allocs: Map<string, { seq: number }>;
  private readonly netDir: string;
  private readonly epDir: string;
  private readonly allocFile: string;

  constructor(stateDir: string) {
    this.netDir = path.join(stateDir, 'networks');
    this.epDir = path.join(stateDir, 'endpoints');
    this.allocFile = path.join(stateDir, 'allocations.json');
    fs.mkdirSync(this.netDir, { recursive: true });
    fs.mkdirSync(this.epDir, { recursive: true });
    this.networks = readDir(this.netDir, NetworkRecord);
    this.endpoints = readDir(this.epDir, EndpointRecord);
    this.allocs = new Map(fs.existsSync(this.allocFile) ? Object.entries(AllocRecord.parse(JSON.parse(fs.readFileSync(this.allocFile, 'utf8')))) : []);
  }

  putNetwork(n: NetworkRecord): void {
    writeAtomic(path.join(this.netDir, `${n.id}.json`), n);
    this.networks.set(n.id, n);
  }
  deleteNetwork(id: string): void {
    fs.rmSync(path.join(this.netDir, `${id}.json`), { force: true });
    this.networks.delete(id);
  }
  putEndpoint(e: EndpointRecord): void {
    writeAtomic(path.join(this.epDir, `${e.id}.json`), e);
    this.endpoints.set(e.id, e);
  }
  deleteEndpoint(id: string): void {
    fs.rmSync(path.join(this.epDir, `${id}.json`), { force: true });
    this.endpoints.delete(id);
  }
  setAlloc(poolId: string, address: string, seq: number | undefined): void {
    const k = `${poolId}|${address}`;
    if (seq === undefined) this.allocs.delete(k);
    else this.allocs.set(k, { seq });
    writeAtomic(this.allocFile, Object.fromEntries(this.allocs));
  }
  allocSeq(poolId: string, address: string): number | undefined {
    return this.allocs.get(`${poolId}|${address}`)?.seq;
  }
  /** The allocation of this address in one of the network's pools (the same address may exist in two address spaces). */
  findAlloc(address: string, poolIds: readonly string[]): AllocInfo | undefined {
    for (const poolId of poolIds) {
      const v = this.allocs.get(`${poolId}|${address}`);
      if (v) return { poolId, address, ...v };
    }
    return undefined;
  }
  /** Whether a network this node created uses the pool (so an address request for it is an endpoint's). */
  poolInUse(poolId: string): boolean {
    for (const n of this.networks.values()) if (n.poolIds.includes(poolId)) return true;
    return false;
  }
}
