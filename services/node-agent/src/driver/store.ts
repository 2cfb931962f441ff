/**
 * The agent's local store: what this host's driver knows about its networks and endpoints, kept as
 * one JSON file per object under the state directory, so a restarted agent knows what it made. Like
 * libnetwork's macvlan_store.go.
 *
 * Every write is durable before it returns: the file is written under a temporary name, fsynced,
 * renamed over the old one, and the directory is fsynced (so the rename survives a power cut too).
 * A file that cannot be parsed or fails its schema is moved aside as `<file>.corrupt-<timestamp>` and
 * reported in `damaged` (never thrown): the agent starts, and what the file held is rebuilt from Docker
 * and the controller (restore.ts). Temporary files left by a crash mid-write are removed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TMP_MARK, replacePrivateFile, syncDir } from '@underlay/adapters';
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

/** A state file that could not be used and was moved aside. */
export interface DamagedFile {
  file: string;
  /** Where it was moved (undefined when even the move failed). */
  movedTo?: string;
  reason: string;
}

/** Writes `data` as JSON to `file`: all of it or (after a crash) the previous content, never a mix. */
export function writeDurable(file: string, data: unknown): void {
  replacePrivateFile(file, JSON.stringify(data, null, 2));
}

function removeDurable(file: string): void {
  if (!fs.existsSync(file)) return;
  fs.rmSync(file, { force: true });
  syncDir(path.dirname(file));
}

/** Why a file's content is not usable: JSON errors and schema errors, in one line. */
function reasonOf(e: unknown): string {
  if (e instanceof z.ZodError) return `does not match its schema: ${e.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).slice(0, 3).join('; ')}`;
  return `is not valid JSON: ${(e as Error).message}`;
}

export class LocalStore {
  readonly networks: Map<string, NetworkRecord>;
  readonly endpoints: Map<string, EndpointRecord>;
  /** `<poolId>|<address>` → allocation seq (so releases carry it and CreateEndpoint can bind it). */
  readonly allocs: Map<string, { seq: number }>;
  /** Files found unusable at load and moved aside (the caller logs them and rebuilds). */
  readonly damaged: DamagedFile[] = [];
  /** True when the allocations file was not there at load (a new host, or a wiped or damaged state directory). */
  readonly allocationsMissing: boolean;
  /** When this process last wrote each network or endpoint record (records read at load have none). */
  private readonly writtenAt = new Map<string, number>();
  private readonly netDir: string;
  private readonly epDir: string;
  private readonly allocFile: string;

  constructor(
    stateDir: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.netDir = path.join(stateDir, 'networks');
    this.epDir = path.join(stateDir, 'endpoints');
    this.allocFile = path.join(stateDir, 'allocations.json');
    fs.mkdirSync(this.netDir, { recursive: true });
    fs.mkdirSync(this.epDir, { recursive: true });
    this.removeTemporaries(stateDir);
    this.removeTemporaries(this.netDir);
    this.removeTemporaries(this.epDir);
    this.networks = this.readDir(this.netDir, NetworkRecord);
    this.endpoints = this.readDir(this.epDir, EndpointRecord);
    const allocs = fs.existsSync(this.allocFile) ? this.readFile(this.allocFile, AllocRecord) : undefined;
    this.allocationsMissing = allocs === undefined;
    this.allocs = new Map(Object.entries(allocs ?? {}));
  }

  /** Half-written files of a write a crash interrupted (the file they were for still has its previous content). */
  private removeTemporaries(dir: string): void {
    for (const f of fs.readdirSync(dir)) if (f.includes(TMP_MARK)) fs.rmSync(path.join(dir, f), { force: true });
  }

  /** The file's content, or undefined after moving an unusable file aside. */
  private readFile<T>(file: string, schema: z.ZodType<T>): T | undefined {
    try {
      const text = fs.readFileSync(file, 'utf8');
      return schema.parse(JSON.parse(text));
    } catch (e) {
      this.moveAside(file, (e as NodeJS.ErrnoException).code ? `could not be read: ${(e as Error).message}` : reasonOf(e));
      return undefined;
    }
  }

  /** Renames an unusable file to `<file>.corrupt-<timestamp>` and records it in `damaged`. */
  private moveAside(file: string, reason: string): void {
    const movedTo = `${file}.corrupt-${this.now().toISOString().replace(/[:.]/g, '-')}`;
    try {
      fs.renameSync(file, movedTo);
      syncDir(path.dirname(file));
      this.damaged.push({ file, movedTo, reason });
    } catch (m) {
      this.damaged.push({ file, reason: `${reason}; moving it aside failed: ${(m as Error).message}` });
    }
  }

  private readDir<T extends { id: string }>(dir: string, schema: z.ZodType<T>): Map<string, T> {
    const out = new Map<string, T>();
    for (const f of fs.readdirSync(dir).sort()) {
      if (!f.endsWith('.json')) continue;
      const rec = this.readFile(path.join(dir, f), schema);
      // A record under another object's name is as unusable as a corrupt one.
      if (rec && rec.id !== f.slice(0, -5)) {
        this.moveAside(path.join(dir, f), `holds id ${rec.id}, not ${f.slice(0, -5)}`);
        continue;
      }
      if (rec) out.set(rec.id, rec);
    }
    return out;
  }

  putNetwork(n: NetworkRecord): void {
    writeDurable(path.join(this.netDir, `${n.id}.json`), n);
    this.networks.set(n.id, n);
    this.writtenAt.set(n.id, this.now().getTime());
  }
  deleteNetwork(id: string): void {
    removeDurable(path.join(this.netDir, `${id}.json`));
    this.networks.delete(id);
    this.writtenAt.delete(id);
  }
  putEndpoint(e: EndpointRecord): void {
    writeDurable(path.join(this.epDir, `${e.id}.json`), e);
    this.endpoints.set(e.id, e);
    this.writtenAt.set(e.id, this.now().getTime());
  }
  deleteEndpoint(id: string): void {
    removeDurable(path.join(this.epDir, `${id}.json`));
    this.endpoints.delete(id);
    this.writtenAt.delete(id);
  }
  /** This process wrote the record of that network or endpoint less than `ms` ago (it may be in flight in Docker). */
  writtenWithin(id: string, ms: number): boolean {
    const at = this.writtenAt.get(id);
    return at !== undefined && this.now().getTime() - at < ms;
  }
  setAlloc(poolId: string, address: string, seq: number | undefined): void {
    const k = `${poolId}|${address}`;
    if (seq === undefined) this.allocs.delete(k);
    else this.allocs.set(k, { seq });
    this.writeAllocs();
  }
  /** Adds allocations not known yet (a rebuild), in one write; returns how many were added. */
  addAllocs(list: readonly AllocInfo[]): number {
    let added = 0;
    for (const a of list) {
      const k = `${a.poolId}|${a.address}`;
      if (this.allocs.has(k)) continue;
      this.allocs.set(k, { seq: a.seq });
      added++;
    }
    if (added > 0 || !fs.existsSync(this.allocFile)) this.writeAllocs();
    return added;
  }
  private writeAllocs(): void {
    writeDurable(this.allocFile, Object.fromEntries(this.allocs));
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
