/**
 * The agent's local store: what this host's driver knows about its networks and endpoints, kept as
 * one JSON file per object under the state directory, so a restarted agent knows what it made. Like
 * libnetwork's macvlan_store.go.
 *
 * Every write is durable before it returns: the file is written under a temporary name, fsynced,
 * renamed over the old one, and the directory is fsynced (so the rename survives a power cut too).
 * The allocations, which change at every address request and release, are a snapshot (`allocations.json`,
 * written that way) and a journal next to it (`allocations.log`): a change is one JSON line appended with
 * one write and an fdatasync, so a request costs a line, not a rewrite of every allocation of the host.
 * Past a bound (twice the allocations, at least COMPACT_MIN_LINES lines) a new snapshot is written, then the
 * journal emptied; a crash between the two replays the journal onto a snapshot that already holds it, to
 * the same map (a line sets or deletes one key). Hand-written: a journal is a few lines here, and an
 * embedded database (SQLite, LevelDB) would bring a native module for a map of a few thousand keys.
 *
 * A file that cannot be parsed or fails its schema is moved aside as `<file>.corrupt-<timestamp>` and
 * reported in `damaged` (never thrown): the agent starts, and what the file held is rebuilt from Docker
 * and the controller (restore.ts). Temporary files left by a crash mid-write are removed; a journal line
 * cut by a crash mid-append (its change never returned) is dropped and reported in `repaired`.
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
  /** `-o host_access=true`: the host has a shim link on the parent (driver/host-access.ts). */
  hostAccess: z.boolean().optional(),
  /** The host's own addresses on the network (one per pool), allocated from the controller as kind `host`. */
  hostAddresses: z.array(z.object({ poolId: z.string(), address: z.string(), allocSeq: z.number().int().nonnegative() })).optional(),
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
/** One line of the allocations journal: the allocation set, or deleted (with the seq it had). */
export const AllocChange = z.object({ op: z.enum(['set', 'del']), poolId: z.string(), address: z.string(), seq: z.number() });
export type AllocChange = z.infer<typeof AllocChange>;

/** The journal is compacted (a new snapshot, the journal emptied) past twice the allocations and at least this many lines. */
export const COMPACT_MIN_LINES = 500;

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

function applyChange(allocs: Map<string, { seq: number }>, c: AllocChange): void {
  const k = `${c.poolId}|${c.address}`;
  if (c.op === 'set') allocs.set(k, { seq: c.seq });
  else allocs.delete(k);
}

export class LocalStore {
  readonly networks: Map<string, NetworkRecord>;
  readonly endpoints: Map<string, EndpointRecord>;
  /** `<poolId>|<address>` → allocation seq (so releases carry it and CreateEndpoint can bind it). */
  readonly allocs: Map<string, { seq: number }>;
  /** Files found unusable at load and moved aside (the caller logs them and rebuilds). */
  readonly damaged: DamagedFile[] = [];
  /** What the load repaired without losing anything (a journal line cut by a crash): the caller logs it. */
  readonly repaired: string[] = [];
  /**
   * True when no allocations were there at load: neither the snapshot nor a journal line (a new host, or a wiped or
   * damaged state directory).
   */
  readonly allocationsMissing: boolean;
  /** When this process last wrote each network or endpoint record (records read at load have none). */
  private readonly writtenAt = new Map<string, number>();
  private readonly netDir: string;
  private readonly epDir: string;
  private readonly allocFile: string;
  private readonly logFile: string;
  /** The journal, open for appending from its first use until close(). */
  private logFd?: number;
  /** The journal's length (bytes, lines) as this store wrote or read it. */
  private logSize = 0;
  private logLines = 0;
  /** After a failed compaction, the journal's length at which to try again (not at every change). */
  private compactRetryAt = 0;

  constructor(
    stateDir: string,
    private readonly now: () => Date = () => new Date(),
    /** Where problems of a write that did not fail its change go (a compaction that failed). */
    private readonly log: (msg: string) => void = () => {},
  ) {
    this.netDir = path.join(stateDir, 'networks');
    this.epDir = path.join(stateDir, 'endpoints');
    this.allocFile = path.join(stateDir, 'allocations.json');
    this.logFile = path.join(stateDir, 'allocations.log');
    fs.mkdirSync(this.netDir, { recursive: true });
    fs.mkdirSync(this.epDir, { recursive: true });
    this.removeTemporaries(stateDir);
    this.removeTemporaries(this.netDir);
    this.removeTemporaries(this.epDir);
    this.networks = this.readDir(this.netDir, NetworkRecord);
    this.endpoints = this.readDir(this.epDir, EndpointRecord);
    const allocs = this.loadAllocs();
    this.allocationsMissing = allocs === undefined;
    this.allocs = allocs ?? new Map();
  }

  /** Closes the journal (a later change opens it again). */
  close(): void {
    if (this.logFd === undefined) return;
    fs.closeSync(this.logFd);
    this.logFd = undefined;
  }

  /**
   * The snapshot with the journal replayed onto it; undefined when there was none or it was damaged. The two files
   * are one state: when either is damaged, both are moved aside (the journal holds changes to that snapshot, and
   * the snapshot is out of date without its journal), and the allocations are rebuilt like a wiped directory's.
   */
  private loadAllocs(): Map<string, { seq: number }> | undefined {
    const hadSnapshot = fs.existsSync(this.allocFile);
    const snapshot = hadSnapshot ? this.readFile(this.allocFile, AllocRecord) : {};
    if (!snapshot) {
      if (fs.statSync(this.logFile, { throwIfNoEntry: false })?.size) this.moveAside(this.logFile, `holds changes to ${this.allocFile}, which was damaged`);
      return undefined;
    }
    const changes = fs.existsSync(this.logFile) ? this.readJournal() : [];
    if (!changes) {
      this.logSize = this.logLines = 0;
      if (hadSnapshot) this.moveAside(this.allocFile, `is out of date without its journal ${this.logFile}, which was damaged`);
      return undefined;
    }
    if (!hadSnapshot && changes.length === 0) return undefined;
    const allocs = new Map(Object.entries(snapshot));
    for (const c of changes) applyChange(allocs, c);
    return allocs;
  }

  /**
   * The journal's lines, or undefined after moving it aside (a line that is not a change, before the last). The
   * last line, when it has no line end or is not JSON, is an append a crash cut (its change never returned): it is
   * cut off the file (the next line must not follow it) and reported in `repaired`.
   */
  private readJournal(): AllocChange[] | undefined {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(this.logFile);
    } catch (e) {
      this.moveAside(this.logFile, `could not be read: ${(e as Error).message}`);
      return undefined;
    }
    const changes: AllocChange[] = [];
    let line = 0;
    while (this.logSize < buf.length) {
      const start = this.logSize;
      const nl = buf.indexOf(0x0a, start);
      line++;
      try {
        if (nl === -1) throw new SyntaxError('no line end');
        changes.push(AllocChange.parse(JSON.parse(buf.subarray(start, nl).toString('utf8'))));
      } catch (e) {
        const torn = nl === -1 || (nl + 1 === buf.length && e instanceof SyntaxError);
        if (!torn) {
          this.moveAside(this.logFile, `line ${line} ${reasonOf(e)}`);
          return undefined;
        }
        try {
          this.cutJournal(start);
        } catch (c) {
          this.close();
          this.moveAside(this.logFile, `ends in a line cut by a crash, which could not be cut off: ${(c as Error).message}`);
          return undefined;
        }
        this.repaired.push(`${this.logFile}: its last line (${buf.length - start} bytes) was cut by a crash while it was written: dropped (its change had not completed)`);
        break;
      }
      this.logSize = nl + 1;
      this.logLines = line;
    }
    return changes;
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
  /** Sets (or with no seq deletes) an allocation: one line appended to the journal, durable before it returns. */
  setAlloc(poolId: string, address: string, seq: number | undefined): void {
    const cur = this.allocs.get(`${poolId}|${address}`);
    if (seq === undefined ? !cur : cur?.seq === seq) return;
    const change: AllocChange = seq === undefined ? { op: 'del', poolId, address, seq: cur!.seq } : { op: 'set', poolId, address, seq };
    this.append(change);
    applyChange(this.allocs, change);
    if (this.logLines > Math.max(2 * this.allocs.size, COMPACT_MIN_LINES, this.compactRetryAt)) this.compact();
  }
  /** Adds allocations not known yet (a rebuild), in one write of the snapshot; returns how many were added. */
  addAllocs(list: readonly AllocInfo[]): number {
    let added = 0;
    for (const a of list) {
      const k = `${a.poolId}|${a.address}`;
      if (this.allocs.has(k)) continue;
      this.allocs.set(k, { seq: a.seq });
      added++;
    }
    if (added > 0 || !fs.existsSync(this.allocFile)) this.writeSnapshot();
    return added;
  }
  /** A new snapshot, durable, then the journal emptied (a crash between the two replays the journal onto it: the same map). */
  private writeSnapshot(): void {
    writeDurable(this.allocFile, Object.fromEntries(this.allocs));
    // The file's own size: a journal this store did not read (one that could not be moved aside) is emptied too.
    if ((fs.statSync(this.logFile, { throwIfNoEntry: false })?.size ?? 0) > 0) this.cutJournal(0);
    this.compactRetryAt = 0;
  }
  /** Compaction after a change: its failure does not fail the change (durable in the journal), it is logged and tried again later. */
  private compact(): void {
    try {
      this.writeSnapshot();
    } catch (e) {
      this.compactRetryAt = this.logLines + COMPACT_MIN_LINES;
      this.log(`the allocations journal ${this.logFile} could not be compacted (every change is still durable in it; trying again in ${COMPACT_MIN_LINES} changes): ${(e as Error).message}`);
    }
  }
  /** The journal, opened on first use (0600, appending; a new file's directory entry made durable). */
  private journal(): number {
    if (this.logFd !== undefined) return this.logFd;
    const created = !fs.existsSync(this.logFile);
    const fd = fs.openSync(this.logFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
    try {
      fs.fchmodSync(fd, 0o600);
      if (created) syncDir(path.dirname(this.logFile));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    this.logFd = fd;
    return fd;
  }
  /** Appends one change in one write, then fdatasync. A part written before a failure is cut off again. */
  private append(change: AllocChange): void {
    const fd = this.journal();
    const line = Buffer.from(`${JSON.stringify(change)}\n`, 'utf8');
    try {
      for (let off = 0; off < line.length; ) off += fs.writeSync(fd, line, off);
      fs.fdatasyncSync(fd);
    } catch (e) {
      try {
        fs.ftruncateSync(fd, this.logSize);
      } catch {
        // What is left is dropped or moved aside at the next load.
      }
      throw e;
    }
    this.logSize += line.length;
    this.logLines++;
  }
  /** Cuts the journal to `size` bytes, durably. */
  private cutJournal(size: number): void {
    const fd = this.journal();
    fs.ftruncateSync(fd, size);
    fs.fsyncSync(fd);
    this.logSize = size;
    if (size === 0) this.logLines = 0;
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
