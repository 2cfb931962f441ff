/**
 * Snapshots of the folded state in etcd, so a cold start reads one snapshot and the events after it.
 * A snapshot is JSON cut into chunks below etcd's request size limit; the manifest is written last
 * and only moves forward, so a reader never sees a half-written snapshot.
 */
import { Range, type Etcd3 } from 'etcd3';
import { keys } from './keys.js';

export const SNAPSHOT_CHUNK_BYTES = 512 * 1024;

interface Manifest {
  seq: number;
  parts: number;
  bytes: number;
}

export class EtcdSnapshots {
  constructor(private readonly client: Etcd3) {}

  async latest(): Promise<{ seq: number; json: string } | undefined> {
    const m = await this.client.get(keys.snapshot).string();
    if (m === null) return undefined;
    const man = JSON.parse(m) as Manifest;
    const parts: string[] = [];
    for (let i = 0; i < man.parts; i++) {
      const part = await this.client.get(keys.snapshotPart(man.seq, i)).string();
      if (part === null) throw new Error(`snapshot ${man.seq} is missing part ${i}`);
      parts.push(part);
    }
    const json = parts.join('');
    if (json.length !== man.bytes) throw new Error(`snapshot ${man.seq} is ${json.length} characters, manifest says ${man.bytes}`);
    return { seq: man.seq, json };
  }

  /** Writes a snapshot at `seq`; returns false when a newer one is already there. Removes older chunks. */
  async write(seq: number, json: string): Promise<boolean> {
    const parts = Math.max(1, Math.ceil(json.length / SNAPSHOT_CHUNK_BYTES));
    for (let i = 0; i < parts; i++) {
      await this.client.put(keys.snapshotPart(seq, i)).value(json.slice(i * SNAPSHOT_CHUNK_BYTES, (i + 1) * SNAPSHOT_CHUNK_BYTES));
    }
    const cur = await this.client.get(keys.snapshot).exec();
    const kv = cur.kvs[0];
    const curSeq = kv ? (JSON.parse(kv.value.toString()) as Manifest).seq : 0;
    if (curSeq >= seq) return false;
    const manifest: Manifest = { seq, parts, bytes: json.length };
    const cmp = kv ? this.client.if(keys.snapshot, 'Mod', '==', kv.mod_revision) : this.client.if(keys.snapshot, 'Create', '==', 0);
    const res = await cmp.then(this.client.put(keys.snapshot).value(JSON.stringify(manifest))).commit();
    if (!res.succeeded) return false;
    // Older snapshots are no longer needed.
    await this.client.delete().range(new Range(keys.snapshotPrefix, keys.snapshotPart(seq, 0).slice(0, -5))).exec();
    return true;
  }
}
