/**
 * Snapshots of the folded state in etcd, so a cold start reads one snapshot and the events after it.
 * A snapshot is JSON cut into chunks below etcd's request size limit; the manifest is written last
 * and only moves forward, so a reader never sees a half-written snapshot. The manifest carries the
 * JSON's length and SHA-256, so a damaged chunk is detected (`SnapshotCorruptError`) instead of restored.
 * Every call has a deadline (`EtcdCalls`).
 */
import { createHash } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { etcd3 } from './lib.js';
import { z } from 'zod';
import { UnderlayError, snapshotHeadRanges, type SnapshotSection } from '@underlay/core';
import { keys } from './keys.js';
import { EtcdCalls } from './client.js';
import { eachAtOnce } from '../runtime/at-once.js';
import type { EtcdEventLog } from './eventlog.js';

export const SNAPSHOT_CHUNK_BYTES = 512 * 1024;
/** Parts read at once on a cold start (one at a time, the controller mostly waited: ~1.5 s of 150 round trips at 1M allocations). */
export const READ_PARTS_AT_ONCE = 4;
/**
 * Largest index written (its JSON): one etcd value, below etcd's default 1.5 MiB request limit, and what one NATS
 * message of the default 1 MiB max_payload can answer. A snapshot of more pools (about 7,000 with short ids) gets no
 * index: agents read it whole.
 */
export const SNAPSHOT_INDEX_MAX_BYTES = 1024 * 1024 - 4096;

/**
 * Where `json` is cut into parts of at most `max` bytes of UTF-8 (as etcd stores them): never between the two halves of
 * a surrogate pair, where a lone half would be stored as U+FFFD (a name with an emoji on a cut made the whole snapshot
 * fail its checksum). Sized in bytes, not characters: 512 Ki characters of 3-byte UTF-8 would pass etcd's default
 * 1.5 MiB request limit.
 */
export function snapshotCuts(json: string, max = SNAPSHOT_CHUNK_BYTES): number[] {
  const cuts: number[] = [];
  let at = 0;
  do cuts.push((at = nextCut(json, at, max)));
  while (at < json.length);
  return cuts;
}

/** Where the part of `json` that starts at `at` ends (snapshotCuts, one part at a time). */
function nextCut(json: string, at: number, max: number): number {
  const highHalf = (i: number): boolean => {
    const c = json.charCodeAt(i);
    return c >= 0xd800 && c <= 0xdbff;
  };
  // A part holds at least one whole character, whatever `max` is.
  const least = Math.min(at + (highHalf(at) ? 2 : 1), json.length);
  let end = Math.max(least, Math.min(at + max, json.length));
  for (;;) {
    if (end < json.length && end - 1 > at && highHalf(end - 1)) end--;
    const bytes = Buffer.byteLength(json.slice(at, end), 'utf8');
    if (bytes <= max || end <= least) break;
    end = Math.max(least, at + Math.floor(((end - at) * max) / bytes));
  }
  return end;
}

export const SnapshotManifest = z.object({
  seq: z.number().int().positive(),
  parts: z.number().int().positive().max(100_000),
  /** Characters of the JSON. */
  bytes: z.number().int().nonnegative(),
  /** SHA-256 (hex) of the JSON's UTF-8; absent in snapshots written before it existed. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
});
export type SnapshotManifest = z.infer<typeof SnapshotManifest>;

/**
 * Where each pool's allocations lie in a snapshot (core's SnapshotSection) with their SHA-256, the SHA-256 of the text
 * outside them (the head: every other part of the state), and where the parts end: a reader of some pools (an agent)
 * reads the head and their sections, and checks each against its hash.
 */
export const SnapshotIndex = z.object({
  /** Character offset where each part ends (the last: the JSON's length). */
  cuts: z.array(z.number().int().nonnegative()).max(100_000),
  /** SHA-256 of the text outside every section, joined in order. */
  head: z.string().regex(/^[0-9a-f]{64}$/),
  pools: z.array(z.object({ poolId: z.string(), start: z.number().int().nonnegative(), end: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })).max(100_000),
});
export type SnapshotIndex = z.infer<typeof SnapshotIndex>;

/**
 * The checksums of a snapshot's text, taken a range at a time in order: the whole (the manifest's), and with sections
 * each section's and the head's (the index's). The writer feeds it each part as it stores it, so the leader's thread
 * never hashes the whole text in one go (at 1M allocations, 78 MB twice: ~0.5 s with nothing else served).
 */
export class SnapshotHasher {
  private readonly whole = createHash('sha256');
  private readonly head = createHash('sha256');
  private readonly pools: ReturnType<typeof createHash>[];
  private readonly sections: readonly SnapshotSection[];
  /** Sections were given: the head's and the sections' checksums are taken too. */
  private readonly indexed: boolean;
  /** Where the text fed so far ends. */
  private at = 0;
  /** The first section not wholly fed yet. */
  private next = 0;

  /** `sections`: the index's (none: the whole text's checksum alone). */
  constructor(
    private readonly length: number,
    sections?: readonly SnapshotSection[],
  ) {
    this.sections = sections ?? [];
    this.indexed = sections !== undefined;
    snapshotHeadRanges(length, this.sections); // checks the sections: in order, not overlapping, inside the text
    this.pools = this.sections.map(() => createHash('sha256'));
  }

  /**
   * Feeds `json[a, b)`, the range after the last one fed; `json` is the snapshot's text (whole); `utf8`: that range's
   * UTF-8 when the caller has it already (the part it stores).
   */
  add(json: string, a: number, b: number, utf8?: Uint8Array): void {
    if (a !== this.at || b < a || b > this.length) throw new Error(`snapshot hash: range [${a}, ${b}) does not follow ${this.at}`);
    if (utf8) this.whole.update(utf8);
    else this.whole.update(json.slice(a, b), 'utf8');
    this.at = b;
    if (!this.indexed) return;
    // The range is cut where sections start and end (between ASCII characters of the JSON's structure).
    let at = a;
    while (at < b) {
      const s = this.sections[this.next];
      if (!s || at < s.start) {
        const end = Math.min(b, s ? s.start : b);
        this.head.update(json.slice(at, end), 'utf8');
        at = end;
      } else {
        const end = Math.min(b, s.end);
        this.pools[this.next]!.update(json.slice(at, end), 'utf8');
        at = end;
        if (at === s.end) this.next++;
      }
    }
    // A section with nothing in it (start = end) at the range's end.
    while (this.sections[this.next] && this.sections[this.next]!.start === b && this.sections[this.next]!.end === b) this.next++;
  }

  /** SHA-256 (hex) of the whole text (once all of it was fed). */
  sha256(): string {
    this.done();
    return this.whole.digest('hex');
  }

  /** The index, with the parts' `cuts` (once all of the text was fed). */
  index(cuts: readonly number[]): SnapshotIndex {
    this.done();
    if (!this.indexed) throw new Error('snapshot hash: no sections were given, so no index');
    return { cuts: [...cuts], head: this.head.digest('hex'), pools: this.sections.map((s, i) => ({ poolId: s.poolId, start: s.start, end: s.end, sha256: this.pools[i]!.digest('hex') })) };
  }

  private done(): void {
    if (this.at !== this.length) throw new Error(`snapshot hash: ${this.length - this.at} characters not fed`);
  }
}

/** The latest snapshot cannot be used (missing part, wrong length or checksum, unreadable manifest). */
export class SnapshotCorruptError extends UnderlayError {
  constructor(
    readonly seq: number | undefined,
    detail: string,
    cause?: unknown,
  ) {
    super('snapshot-corrupt', `snapshot${seq === undefined ? '' : ` ${seq}`} is corrupt: ${detail}`, { cause });
    this.name = 'SnapshotCorruptError';
  }
}

export const sha256Hex = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

export class EtcdSnapshots {
  private readonly client: Etcd3;
  private readonly calls: EtcdCalls;

  /** On the event log's client (and its deadline), or on a bare client (default deadline). */
  constructor(source: Etcd3 | EtcdEventLog, calls?: EtcdCalls) {
    if ('calls' in source && 'client' in source) {
      this.client = source.client;
      this.calls = calls ?? source.calls;
    } else {
      this.client = source;
      this.calls = calls ?? new EtcdCalls([]);
    }
  }

  /** The latest manifest, or undefined when no snapshot was written. Throws SnapshotCorruptError for a bad one. */
  async latestManifest(): Promise<SnapshotManifest | undefined> {
    const m = await this.calls.run(`get ${keys.snapshot}`, (o) => this.client.get(keys.snapshot).options(o).string());
    if (m === null) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(m);
    } catch (e) {
      throw new SnapshotCorruptError(undefined, `the manifest ${keys.snapshot} is not JSON`, e);
    }
    const r = SnapshotManifest.safeParse(parsed);
    if (!r.success) throw new SnapshotCorruptError(undefined, `the manifest ${keys.snapshot} is invalid (${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message})`);
    return r.data;
  }

  /** One raw chunk of snapshot `seq`, or undefined when it is not there (replaced by a newer snapshot). */
  async readPart(seq: number, part: number): Promise<string | undefined> {
    return (await this.readPartBytes(seq, part))?.toString('utf8');
  }

  /** The index of snapshot `seq`; undefined when it has none (written before indexes, or replaced). Throws SnapshotCorruptError for a bad one. */
  async readIndex(seq: number): Promise<SnapshotIndex | undefined> {
    const key = keys.snapshotIndex(seq);
    const v = await this.calls.run(`get ${key}`, (o) => this.client.get(key).options(o).string());
    if (v === null) return undefined;
    try {
      return SnapshotIndex.parse(JSON.parse(v));
    } catch (e) {
      throw new SnapshotCorruptError(seq, `its index ${key} is invalid (${(e as Error).message.slice(0, 200)})`, e);
    }
  }

  /** One chunk of snapshot `seq` as stored (UTF-8), or undefined when it is not there. */
  private async readPartBytes(seq: number, part: number): Promise<Buffer | undefined> {
    const key = keys.snapshotPart(seq, part);
    const v = await this.calls.run(`get ${key}`, (o) => this.client.get(key).options(o).buffer());
    return v ?? undefined;
  }

  /**
   * The text of snapshot `seq` from character `start`, up to `end` or the end of the part holding `start` (whichever
   * comes first: the reader asks again for the rest); undefined when the part is gone (replaced by a newer snapshot).
   */
  async readRange(seq: number, cuts: readonly number[], start: number, end: number): Promise<string | undefined> {
    let part = 0;
    while (part < cuts.length && cuts[part]! <= start) part++;
    if (part >= cuts.length) return '';
    const text = await this.readPart(seq, part);
    if (text === undefined) return undefined;
    const partStart = part === 0 ? 0 : cuts[part - 1]!;
    return text.slice(start - partStart, Math.min(end, cuts[part]!) - partStart);
  }

  /**
   * The latest snapshot's JSON, checked against its manifest; undefined when there is none. Reads a few parts at once
   * and hashes them in order as they arrive (the checksum of the whole JSON, computed while later parts are on their
   * way). The parts stay bytes until the end, then the whole is decoded once: each part is whole UTF-8 (cut between
   * characters, snapshotCuts), and a part decoded to text and hashed as text was encoded again (~10% of a 1M-allocation
   * cold start, with the decodes and the join of ~150 strings).
   */
  async latest(): Promise<{ seq: number; json: string } | undefined> {
    const man = await this.latestManifest();
    if (!man) return undefined;
    const parts: (Buffer | undefined)[] = new Array(man.parts);
    const hash = man.sha256 !== undefined ? createHash('sha256') : undefined;
    let hashed = 0;
    let missing: number | undefined;
    await eachAtOnce(man.parts, READ_PARTS_AT_ONCE, async (i) => {
      const part = await this.readPartBytes(man.seq, i);
      if (part === undefined) {
        missing = Math.min(missing ?? i, i);
        return false;
      }
      parts[i] = part;
      while (hash && hashed < man.parts && parts[hashed] !== undefined) hash.update(parts[hashed++]!);
    });
    if (missing !== undefined) {
      // A newer snapshot may have replaced this one while we read: read the newest instead.
      const now = await this.latestManifest();
      if (now && now.seq > man.seq) return this.latest();
      throw new SnapshotCorruptError(man.seq, `part ${missing} of ${man.parts} is missing`);
    }
    const json = Buffer.concat(parts as Buffer[]).toString('utf8');
    checkSnapshot(man, json, hash?.digest('hex'));
    return { seq: man.seq, json };
  }

  /**
   * Writes a snapshot at `seq`; returns false when a newer one is already there (or one at the same seq, unless
   * `replaceSameSeq`: a corrupt snapshot is replaced by a good one of the same seq). Removes older chunks. `sections`
   * (snapshotJsonParts's): its index is written too, so agents read only the pools they follow.
   */
  async write(seq: number, json: string, o: { replaceSameSeq?: boolean; sections?: readonly SnapshotSection[] } = {}): Promise<boolean> {
    // A part at a time: cut, hashed (SnapshotHasher) and stored, so no step runs over the whole text at once.
    const cuts: number[] = [];
    const hasher = new SnapshotHasher(json.length, o.sections);
    let at = 0;
    do {
      const end = nextCut(json, at, SNAPSHOT_CHUNK_BYTES);
      const key = keys.snapshotPart(seq, cuts.length);
      const value = Buffer.from(json.slice(at, end), 'utf8');
      hasher.add(json, at, end, value);
      cuts.push(end);
      at = end;
      await this.calls.run(`put ${key}`, (o) => this.client.put(key).value(value).options(o).exec());
    } while (at < json.length);
    const parts = cuts.length;
    const sha256 = hasher.sha256();
    const indexKey = keys.snapshotIndex(seq);
    const index = o.sections && JSON.stringify(hasher.index(cuts));
    if (index && Buffer.byteLength(index) <= SNAPSHOT_INDEX_MAX_BYTES) {
      await this.calls.run(`put ${indexKey}`, (o) => this.client.put(indexKey).value(index).options(o).exec());
    } else {
      // Too large, or none: agents read the snapshot whole. A snapshot of the same seq written before with an index
      // (replaced as corrupt) must not keep it.
      await this.calls.run(`delete ${indexKey}`, (o) => this.client.delete().key(indexKey).options(o).exec());
    }
    const cur = await this.calls.run(`get ${keys.snapshot}`, (o) => this.client.get(keys.snapshot).options(o).exec());
    const kv = cur.kvs[0];
    let curSeq = 0;
    try {
      curSeq = kv ? (JSON.parse(kv.value.toString()) as SnapshotManifest).seq : 0;
    } catch {
      curSeq = 0; // an unreadable manifest is replaced
    }
    if (curSeq > seq || (curSeq === seq && !o.replaceSameSeq)) return false;
    const manifest: SnapshotManifest = { seq, parts, bytes: json.length, sha256 };
    const res = await this.calls.run(`txn put ${keys.snapshot} at seq ${seq}`, (o) => {
      const cmp = kv ? this.client.if(keys.snapshot, 'Mod', '==', kv.mod_revision) : this.client.if(keys.snapshot, 'Create', '==', 0);
      return cmp.then(this.client.put(keys.snapshot).value(JSON.stringify(manifest))).options(o).commit();
    });
    if (!res.succeeded) return false;
    // Older snapshots are no longer needed.
    const older = new (etcd3().Range)(keys.snapshotPrefix, keys.snapshotPart(seq, 0).slice(0, -5));
    await this.calls.run(`delete snapshots before ${seq}`, (o) => this.client.delete().range(older).options(o).exec());
    return true;
  }
}

/** Throws SnapshotCorruptError unless `json` has the manifest's length and checksum (`sha256`: the JSON's, when already computed). */
export function checkSnapshot(man: SnapshotManifest, json: string, sha256?: string): void {
  if (json.length !== man.bytes) throw new SnapshotCorruptError(man.seq, `${json.length} characters, the manifest says ${man.bytes}`);
  if (man.sha256 !== undefined) {
    const got = sha256 ?? sha256Hex(json);
    if (got !== man.sha256) throw new SnapshotCorruptError(man.seq, `SHA-256 ${got.slice(0, 16)}… does not match the manifest's ${man.sha256.slice(0, 16)}…`);
  }
}
