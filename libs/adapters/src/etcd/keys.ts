/** The etcd keyspace. Keep docs/ARCHITECTURE.md in step with this file. */
export const ROOT = '/underlay/v1/';
export const keys = {
  /** One key per event, in sequence order: /underlay/v1/events/0000000000000042 → ClusterEvent JSON. */
  eventPrefix: `${ROOT}events/`,
  event: (seq: number) => `${ROOT}events/${String(seq).padStart(16, '0')}`,
  /** The log head: {"seq": N}. Every append compares it, so two writers can never both succeed. */
  head: `${ROOT}head`,
  /**
   * Where the trimmed log begins: {"before": N} — every event with seq < N was deleted (behind a snapshot);
   * absent while nothing was trimmed. Written in the same transaction as each trimming delete.
   */
  trimmed: `${ROOT}trimmed`,
  /** Latest snapshot manifest: {"seq": N, "parts": P, "bytes": B, "sha256": H} (B: characters of the JSON, H: of its UTF-8). */
  snapshot: `${ROOT}snapshot`,
  /** Snapshot chunks: /underlay/v1/snapshots/<seq 16 digits>/<part 4 digits> → a slice of the snapshot JSON. */
  snapshotPrefix: `${ROOT}snapshots/`,
  snapshotPart: (seq: number, part: number) => `${ROOT}snapshots/${String(seq).padStart(16, '0')}/${String(part).padStart(4, '0')}`,
  /**
   * A snapshot's index, written before its manifest: /underlay/v1/snapshots/<seq 16 digits>/index →
   * {"cuts": [end of each part], "head": H, "pools": [{"poolId", "start", "end", "sha256"}]} (each pool's allocations
   * as a character range of the JSON with its SHA-256; H: the SHA-256 of the text outside them). Absent for a snapshot
   * written before it existed.
   */
  snapshotIndex: (seq: number) => `${ROOT}snapshots/${String(seq).padStart(16, '0')}/index`,
  /** The leader key (value: controller name; its create revision fences every append). */
  leader: `${ROOT}leader`,
} as const;
