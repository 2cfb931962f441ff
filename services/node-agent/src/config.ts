import { z } from 'zod';
import { LIMITS, NodeName, tryParseAddr } from '@underlay/core';
import { NatsServers } from '@underlay/adapters';
import { parseListen } from './http.js';

/**
 * Milliseconds from `min` to `max` (at most LIMITS.timerMs, 2^31-1: Node.js fires a longer setTimeout or
 * setInterval at once). `what` names the flag.
 */
const ms = (what: string, min = 100, max: number = LIMITS.timerMs, why = 'the longest timer Node.js keeps') =>
  z.coerce
    .number()
    .int(`${what} must be whole milliseconds`)
    .min(min, `${what} must be at least ${min} ms`)
    .max(max, `${what} must be at most ${max} ms (${why})`);
/** A hold's length: 0 (off, as a number or as the text a flag or an environment variable gives: "0", " 0") or at least 100 ms. */
const holdMs = (what: string) => z.preprocess((v) => (typeof v === 'string' && v.trim() === '0' ? 0 : v), z.union([z.literal(0), ms(what, 100)]));
/** The default lease is three report intervals, and a lease is a timer too. */
const MAX_REPORT_INTERVAL_MS = Math.floor(LIMITS.timerMs / 3);
const path = (what: string) => z.string().min(1).max(LIMITS.path, `${what} must be at most ${LIMITS.path} characters`);
/** Most --parent-map entries and --bgp-peers. */
const MAX_ENTRIES = LIMITS.mapEntries;

/** `eth0=ens3,eth1=ens4` (or a map): cluster parent names → this host's interface names. */
export const ParentMap = z.preprocess(
  (v) => {
    if (typeof v === 'string') v = v.split(',');
    if (Array.isArray(v)) {
      return Object.fromEntries(
        v.filter((x) => String(x).trim() !== '').map((x) => {
          const [a, b] = String(x).split('=');
          return [a?.trim() ?? '', b?.trim() ?? ''];
        }),
      );
    }
    return v;
  },
  z.record(
    z.string().regex(/^[^\s=/]{1,15}$/, 'each --parent-map entry is CLUSTER=LOCAL, for example eth0=ens3'),
    z.string().regex(/^[^\s=/]{1,15}$/, 'each --parent-map entry is CLUSTER=LOCAL, for example eth0=ens3'),
  ).refine((m) => Object.keys(m).length <= MAX_ENTRIES, `--parent-map takes at most ${MAX_ENTRIES} entries`),
);


export const AgentConfig = z.object({
  node: NodeName,
  /** The NATS servers (of one cluster): the connection moves to another when the one it uses goes away. */
  nats: NatsServers,
  /** NATS credentials (a `.creds` file from `underlay creds node NAME`) and TLS files (CA, client certificate, key). */
  natsCreds: z.string().min(1).optional(),
  natsCa: z.string().min(1).optional(),
  natsCert: z.string().min(1).optional(),
  natsKey: z.string().min(1).optional(),
  docker: path('--docker').regex(/^unix:\/\/\/.+/, 'docker must be a unix:// URL such as unix:///var/run/docker.sock').default('unix:///var/run/docker.sock'),
  pluginDir: path('--plugin-dir').default('/run/docker/plugins'),
  /**
   * The name Docker knows this plugin by, in its networks' Driver field: `underlay` for the socket plugin (the
   * socket is always underlay.sock), `underlay/underlay:VERSION` when installed as a managed plugin.
   */
  driverName: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._/-]*(?::[\w][\w.-]{0,127})?$/, '--driver-name must be a plugin name such as underlay or underlay/underlay:0.1.0')
    .max(255)
    .default('underlay'),
  /** GET /metrics, /healthz and /readyz on HOST:PORT (no token); '' or `off` turns the listener off. */
  listen: z
    .string()
    .max(LIMITS.hostAddress, `--listen must be at most ${LIMITS.hostAddress} characters`)
    .refine((v) => {
      try {
        parseListen(v);
        return true;
      } catch {
        return false;
      }
    }, "--listen must be HOST:PORT (for example 127.0.0.1:7411), or '' or off to turn it off")
    .default('127.0.0.1:7411'),
  stateDir: path('--state-dir').default('/var/lib/underlay'),
  /** How often the agent reports to the controller (which renews its lease). */
  reportIntervalMs: ms('--report-interval-ms', 100, MAX_REPORT_INTERVAL_MS, 'the default lease, three intervals, must fit the longest timer Node.js keeps').default(5_000),
  /** The node is NotReady when the controller heard nothing for this long (default: 3 report intervals). */
  leaseMs: ms('--lease-ms').optional(),
  /**
   * This host's address on the underlay network: next hop for routes to its blocks (default: its first IPv4
   * address). Give an IPv4 and an IPv6 address, comma-separated, for routes to IPv6 blocks.
   */
  address: z
    .string()
    .min(1)
    .max(LIMITS.hostAddress, `--address must be at most ${LIMITS.hostAddress} characters`)
    .refine((v) => v.split(',').every((a) => tryParseAddr(a.trim()) !== undefined), 'address must be an IP address, or an IPv4 and an IPv6 address separated by a comma')
    .optional(),
  /** Cluster parent names → this host's interfaces, so one definition fits hosts with other NIC names. */
  parentMap: ParentMap.default({}),
  /** How often cluster networks are reconciled with the local Docker (also on every change). */
  reconcileIntervalMs: ms('--reconcile-interval-ms').default(10_000),
  /**
   * How long an address this host's Docker released stays this host's, handed back first to the next container
   * here (a restarted container comes back with its address: driver/address-holds.ts); 0 releases at once.
   */
  addressHoldMs: holdMs('--address-hold-ms').default(60_000),
  /**
   * How long an address of a sticky pool (`--ipam-opt sticky=true`) waits for a container of the same name on this
   * host (driver/sticky.ts); 0 releases at once (no stable identities).
   */
  stickyHoldMs: holdMs('--sticky-hold-ms').default(600_000),
  /**
   * How long a Docker call that arrives while the agent starts waits for start-up before it fails (the plugin socket is
   * served from the agent's first moment: startup-gate.ts); under Docker's 30 s limit of a plugin call.
   */
  startupWaitMs: ms('--startup-wait-ms', 100).default(25_000),
  /** Program routes to other hosts' blocks for ipvlan l3/l3s networks (and check the kernel this often). */
  routes: z.boolean().default(true),
  routeReconcileMs: ms('--route-reconcile-ms').default(10_000),
  /** BGP through a local gobgpd: this host's AS number (BGP is off without it). */
  bgpAsn: z.coerce.number().int('--bgp-asn must be a whole number').min(1, '--bgp-asn must be 1 to 4294967295').max(4294967295, '--bgp-asn must be 1 to 4294967295').optional(),
  /** BGP router id (default: the host address). */
  bgpRouterId: z.string().max(LIMITS.address, `--bgp-router-id must be at most ${LIMITS.address} characters`).optional(),
  /** Peers as ADDRESS:ASN (e.g. 198.51.100.254:65000). */
  bgpPeers: z
    .array(z.string().max(LIMITS.address).regex(/^[0-9a-fA-F.:]+:\d+$/, 'each BGP peer is ADDRESS:ASN, for example 198.51.100.254:65000'))
    .max(MAX_ENTRIES, `--bgp-peers takes at most ${MAX_ENTRIES} peers`)
    .default([]),
  /** gobgpd's gRPC API: 127.0.0.1:PORT, [::1]:PORT or unix:PATH (never all addresses). */
  bgpApi: path('--bgp-api').default('127.0.0.1:50051'),
  /** Install routes learned from BGP peers (with underlay's protocol number). */
  bgpInstallLearned: z.boolean().default(false),
});
export type AgentConfig = z.infer<typeof AgentConfig>;
export type AgentConfigInput = z.input<typeof AgentConfig>;

/** The host interface for a cluster parent name: `eth0` → `ens3`, and `eth0.20` → `ens3.20`. */
export function mapParent(map: Readonly<Record<string, string>>, parent: string): string {
  if (map[parent]) return map[parent];
  const dot = parent.lastIndexOf('.');
  if (dot > 0) {
    const base = parent.slice(0, dot);
    if (map[base]) return `${map[base]}${parent.slice(dot)}`;
  }
  return parent;
}
