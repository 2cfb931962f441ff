/**
 * The maxima of every string, list and map that crosses a boundary (NATS requests and replies, the plugin
 * socket, the HTTP API, events): one table, so the schemas, the docs and the tests cite the same numbers.
 * They come from what Docker and the kernel allow; a whole NATS message is bounded anyway by the server's
 * `max_payload` (1 MiB by default), so the large list maxima only say what one message may describe.
 */
import { z } from 'zod';

export const LIMITS = {
  /** Docker's network, endpoint, container and sandbox ids: 64 hex digits. */
  dockerId: 64,
  /** A node name (protocol/ipam.ts NodeName): 63 characters, like a DNS label. */
  nodeName: 63,
  /** Names: Docker networks and containers as Docker gives them, address spaces, label and option keys, hosts of --aux-address. */
  name: 255,
  /** Linux interface names: IFNAMSIZ (16) less the terminating NUL. */
  ifName: 15,
  /** An IP address or CIDR as text (the longest IPv6 CIDR has 43 characters; a MAC address fits too). */
  address: 64,
  /** A host's underlay address(es): an IPv4 and an IPv6 address, comma-separated. */
  hostAddress: 128,
  /** A pool id, `<space>/<cidr>`. */
  poolId: 320,
  /** Request ids an agent makes per Docker call (a uuid fits). */
  requestId: 64,
  /** A version string. */
  version: 128,
  /** One option, label or --ipam-opt value (Docker's own values are short; 4 KiB is a page). */
  optionValue: 4096,
  /** Entries of one options, labels or --ipam-opt map. */
  mapEntries: 64,
  /** --aux-address reservations of one subnet. */
  auxAddresses: 256,
  /** Subnets of one network (Docker's IPAM config list, IPv4 and IPv6 together). */
  subnets: 32,
  /** Pools one Docker network uses. */
  poolIds: 64,
  /** A file system path (PATH_MAX). */
  path: 4096,
  /** Free text: error messages, conflict and status details (longer ones are cut, see clipText). */
  message: 16_384,
  /** Endpoints (and endpoint states, and containers on one network) one host reports: a host may run thousands. */
  nodeEndpoints: 65_536,
  /** Interface names one host reports (every veth included). */
  nodeInterfaces: 65_536,
  /** Networks one host reports. */
  nodeNetworks: 4096,
  /** Cluster-wide lists in HTTP answers (endpoints, pools, blocks, nodes, hosts of a network). */
  clusterList: 1_048_576,
  /** Events in one read (`events.read`, `GET /v1/events`). */
  readEvents: 10_000,
  /** An event's chain (state/chains.ts): `p.` and a pool id as a subject token (6 characters for the widest character). */
  chain: 2048,
  /** Chains one head request asks about (an agent's: the cluster, its host, the pools of its networks). */
  headChains: 4096,
  /** Event ids (a uuid), times (RFC 3339) and trace ids. */
  eventMeta: 64,
  /** Who caused an event: `node:<name>`, `user:<token name>` or `controller`. */
  actor: 320,
  /** Decimal digits of an address count (2^128 has 39). */
  countDigits: 40,
  /** The longest timer Node.js keeps: a setTimeout/setInterval above 2^31-1 ms fires at once. */
  timerMs: 2_147_483_647,
} as const;

/** An allocation handle: `<node>/req/<requestId>` or `<node>/<mac option>`. */
export const HANDLE_MAX = LIMITS.nodeName + '/req/'.length + LIMITS.optionValue;

/** A string of at most `max` characters. */
export const text = (max: number) => z.string().max(max);

/**
 * A map of at most `maxEntries` keys (zod's record has no size check of its own). The bound also shows in
 * the JSON Schema (/openapi.json) as maxProperties.
 */
export function boundedRecord<K extends z.core.$ZodRecordKey, V extends z.core.SomeType>(key: K, value: V, maxEntries: number = LIMITS.mapEntries) {
  return z
    .record(key, value)
    .refine((r) => Object.keys(r).length <= maxEntries, { message: `at most ${maxEntries} entries` })
    .meta({ maxProperties: maxEntries });
}

/** Options, labels and --ipam-opt maps: at most LIMITS.mapEntries entries, keys of LIMITS.name, values of LIMITS.optionValue. */
export const optionMap = () => boundedRecord(text(LIMITS.name), text(LIMITS.optionValue), LIMITS.mapEntries);

/** Cuts a text to `max` characters (marking the cut), so a message built from many parts still fits its schema. */
export function clipText(s: string, max: number = LIMITS.message): string {
  if (s.length <= max) return s;
  const kept = max - ' … ( more characters)'.length - String(s.length).length;
  return `${s.slice(0, kept)} … (${s.length - kept} more characters)`;
}

/**
 * A string cut to `max` characters instead of refused, for what a node reports about itself only to be shown
 * (container and network names, for which Docker sets no maximum; error and status texts): refusing one would
 * refuse the whole report, and with it the node's lease. The parsed value is still at most `max` long.
 */
export const cutText = (max: number) => z.preprocess((v) => (typeof v === 'string' && v.length > max ? clipText(v, max) : v), z.string().max(max));
