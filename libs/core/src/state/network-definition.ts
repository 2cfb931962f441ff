/**
 * A cluster network's definition: what `docker network create` was given (or `underlay network create`),
 * in a normal form two hosts can compare. Every agent creates its replica from it through the Docker
 * Engine API, so the same name means the same network everywhere.
 */
import { z } from 'zod';
import { LIMITS, boundedRecord, cutText, optionMap, text } from '../limits.js';

/** --aux-address host=IP of one subnet. */
const auxMap = () => boundedRecord(text(LIMITS.name), text(LIMITS.address), LIMITS.auxAddresses);

export const SubnetConfig = z.object({
  subnet: text(LIMITS.address).min(1),
  /** Empty means not set (as Docker shows it). */
  ipRange: text(LIMITS.address).optional(),
  gateway: text(LIMITS.address).optional(),
  auxAddresses: auxMap().default({}),
});
export type SubnetConfig = z.infer<typeof SubnetConfig>;

export const NetworkDefinition = z.object({
  /** Driver options (`-o`): parent, macvlan_mode, ipvlan_mode, ipvlan_flag. */
  options: optionMap().default({}),
  /** `--ipam-opt`. */
  ipamOptions: optionMap().default({}),
  subnets: z.array(SubnetConfig).min(1, 'a network needs at least one --subnet').max(LIMITS.subnets, `a network has at most ${LIMITS.subnets} subnets`),
  ipv6: z.boolean().default(false),
  internal: z.boolean().default(false),
  /** `--label`, less underlay's own (io.underlay.*). */
  labels: optionMap().default({}),
});
export type NetworkDefinition = z.infer<typeof NetworkDefinition>;
export type NetworkDefinitionInput = z.input<typeof NetworkDefinition>;

/** Network names as Docker allows them. */
export const NetworkName = z
  .string()
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/, 'a network name starts with a letter or digit and holds only letters, digits, "_", "." or "-"');

/** Labels underlay puts on Docker networks it creates. */
export const REPLICA_LABEL = 'io.underlay.replica';
const OWN_LABEL_PREFIX = 'io.underlay.';
/** Docker-internal keys that may show in a network's Options but are not driver options. */
const DOCKER_OPTION_PREFIX = 'com.docker.network.';

const sortedMap = (m: Record<string, string> | null | undefined, keep: (k: string) => boolean = () => true): Record<string, string> =>
  Object.fromEntries(
    Object.entries(m ?? {})
      .filter(([k]) => keep(k))
      .map(([k, v]) => [k, String(v)] as [string, string])
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );

/** The normal form: sorted maps and subnets, no empty strings, no underlay labels. */
export function normalizeDefinition(input: NetworkDefinitionInput): NetworkDefinition {
  const d = NetworkDefinition.parse(input);
  const subnets = d.subnets
    .map((s) => ({
      subnet: s.subnet,
      ...(s.ipRange ? { ipRange: s.ipRange } : {}),
      ...(s.gateway ? { gateway: s.gateway } : {}),
      auxAddresses: sortedMap(s.auxAddresses),
    }))
    .sort((a, b) => (a.subnet < b.subnet ? -1 : a.subnet > b.subnet ? 1 : 0));
  return {
    options: sortedMap(d.options, (k) => !k.startsWith(DOCKER_OPTION_PREFIX)),
    ipamOptions: sortedMap(d.ipamOptions),
    subnets,
    ipv6: d.ipv6,
    internal: d.internal,
    labels: sortedMap(d.labels, (k) => !k.startsWith(OWN_LABEL_PREFIX)),
  };
}

const show = (v: unknown) => (v === undefined ? 'not set' : JSON.stringify(v));

function diffMap(what: string, a: Record<string, string>, b: Record<string, string>, out: string[]): void {
  for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    if (a[k] !== b[k]) out.push(`${what} ${k}: cluster has ${show(a[k])}, this one has ${show(b[k])}`);
  }
}

/** Lines describing how `b` differs from the cluster's `a` (empty when they are the same network). */
export function diffDefinitions(aIn: NetworkDefinitionInput, bIn: NetworkDefinitionInput): string[] {
  const a = normalizeDefinition(aIn);
  const b = normalizeDefinition(bIn);
  const out: string[] = [];
  diffMap('option', a.options, b.options, out);
  diffMap('ipam option', a.ipamOptions, b.ipamOptions, out);
  const sa = new Map(a.subnets.map((s) => [s.subnet, s]));
  const sb = new Map(b.subnets.map((s) => [s.subnet, s]));
  for (const s of sa.keys()) if (!sb.has(s)) out.push(`subnet ${s}: cluster has it, this one does not`);
  for (const s of sb.keys()) if (!sa.has(s)) out.push(`subnet ${s}: this one has it, the cluster does not`);
  for (const [s, x] of sa) {
    const y = sb.get(s);
    if (!y) continue;
    if (x.ipRange !== y.ipRange) out.push(`subnet ${s} ip-range: cluster has ${show(x.ipRange)}, this one has ${show(y.ipRange)}`);
    if (x.gateway !== y.gateway) out.push(`subnet ${s} gateway: cluster has ${show(x.gateway)}, this one has ${show(y.gateway)}`);
    diffMap(`subnet ${s} aux-address`, x.auxAddresses, y.auxAddresses, out);
  }
  if (a.ipv6 !== b.ipv6) out.push(`ipv6: cluster has ${a.ipv6}, this one has ${b.ipv6}`);
  if (a.internal !== b.internal) out.push(`internal: cluster has ${a.internal}, this one has ${b.internal}`);
  diffMap('label', a.labels, b.labels, out);
  return out;
}

/** What the Docker Engine API answers for GET /networks/{id} (the fields underlay reads). */
export const DockerNetworkInspect = z.object({
  Name: text(LIMITS.name),
  Id: text(LIMITS.dockerId),
  Driver: text(LIMITS.name),
  EnableIPv6: z.boolean().optional().default(false),
  Internal: z.boolean().optional().default(false),
  IPAM: z
    .object({
      Driver: text(LIMITS.name).optional(),
      Options: optionMap().nullish(),
      Config: z
        .array(
          z.object({
            Subnet: text(LIMITS.address).optional(),
            IPRange: text(LIMITS.address).optional(),
            Gateway: text(LIMITS.address).optional(),
            AuxiliaryAddresses: auxMap().nullish(),
          }),
        )
        .max(LIMITS.subnets)
        .nullish(),
    })
    .optional(),
  Options: optionMap().nullish(),
  Labels: optionMap().nullish(),
  /**
   * By container id, or `ep-<endpoint id>` for an endpoint not in a container yet. Docker puts no bound on
   * container names: a longer one is cut (it is only shown), never refused.
   */
  Containers: boundedRecord(
    text(LIMITS.name),
    z.object({
      Name: cutText(LIMITS.name).optional(),
      EndpointID: text(LIMITS.dockerId).optional(),
      MacAddress: text(LIMITS.address).optional(),
      IPv4Address: text(LIMITS.address).optional(),
      IPv6Address: text(LIMITS.address).optional(),
    }),
    LIMITS.nodeEndpoints,
  ).nullish(),
});
export type DockerNetworkInspect = z.infer<typeof DockerNetworkInspect>;

/**
 * One entry of GET /containers/json?all=1 (the fields underlay reads): its networks by name, each with the network's
 * id and the container's endpoint on it (empty while the container is not running, and while it is being started).
 */
export const DockerContainerSummary = z.object({
  Id: text(LIMITS.dockerId),
  /** `/web`: Docker's names start with a slash. */
  Names: z.array(cutText(LIMITS.name)).max(LIMITS.mapEntries).nullish(),
  State: cutText(LIMITS.name).optional(),
  NetworkSettings: z
    .object({
      Networks: boundedRecord(
        cutText(LIMITS.name),
        z.object({ NetworkID: text(LIMITS.dockerId).optional(), EndpointID: text(LIMITS.dockerId).optional() }).nullable(),
        LIMITS.mapEntries,
      ).nullish(),
    })
    .nullish(),
});
export type DockerContainerSummary = z.infer<typeof DockerContainerSummary>;

/** The definition of a network as the local Docker holds it. */
export function definitionFromDocker(n: DockerNetworkInspect): NetworkDefinition {
  return normalizeDefinition({
    options: n.Options ?? {},
    ipamOptions: n.IPAM?.Options ?? {},
    subnets: (n.IPAM?.Config ?? [])
      .filter((c) => c.Subnet)
      .map((c) => ({ subnet: c.Subnet!, ipRange: c.IPRange || undefined, gateway: c.Gateway || undefined, auxAddresses: c.AuxiliaryAddresses ?? {} })),
    ipv6: n.EnableIPv6,
    internal: n.Internal,
    labels: n.Labels ?? {},
  });
}

/** The body of POST /networks/create that makes this network in a local Docker. */
export function dockerCreateBody(name: string, def: NetworkDefinition, driver: string, labels: Record<string, string>): Record<string, unknown> {
  return {
    Name: name,
    CheckDuplicate: true,
    Driver: driver,
    EnableIPv6: def.ipv6,
    Internal: def.internal,
    Options: def.options,
    Labels: { ...def.labels, ...labels },
    IPAM: {
      Driver: driver,
      Options: def.ipamOptions,
      Config: def.subnets.map((s) => ({
        Subnet: s.subnet,
        ...(s.ipRange ? { IPRange: s.ipRange } : {}),
        ...(s.gateway ? { Gateway: s.gateway } : {}),
        ...(Object.keys(s.auxAddresses).length ? { AuxiliaryAddresses: s.auxAddresses } : {}),
      })),
    },
  };
}
