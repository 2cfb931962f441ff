/** The etcd keyspace. Keep docs/ARCHITECTURE.md in step with this file. */
export const ROOT = '/underlay/v1/';
export const keys = {
  /** One key per event, in sequence order: /underlay/v1/events/0000000000000042 → ClusterEvent JSON. */
  eventPrefix: `${ROOT}events/`,
  event: (seq: number) => `${ROOT}events/${String(seq).padStart(16, '0')}`,
  /** The log head: {"seq": N}. Every append compares it, so two writers can never both succeed. */
  head: `${ROOT}head`,
} as const;
