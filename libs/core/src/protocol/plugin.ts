/**
 * Docker's remote plugin protocol (NetworkDriver + IpamDriver), as libnetwork speaks it.
 * Field names follow libnetwork's drivers/remote/api and ipams/remote/api exactly.
 * Requests are loose objects: Docker may add fields in later versions.
 */
import { z } from 'zod';
import { LIMITS, boundedRecord, optionMap, text } from '../limits.js';

export const PLUGIN_NAME = 'underlay';
export const IMPLEMENTS = ['NetworkDriver', 'IpamDriver'] as const;
/** Address spaces our IpamDriver announces (defined with the driver options in ../options.ts). */
export { LOCAL_ADDRESS_SPACE, GLOBAL_ADDRESS_SPACE } from '../options.js';

const strMap = optionMap();
/** Docker's option maps (a few com.docker.network.* keys); their values are read through stricter schemas. */
const anyMap = boundedRecord(text(LIMITS.name), z.unknown(), LIMITS.mapEntries);
const id = text(LIMITS.dockerId).min(1);
const address = text(LIMITS.address);
const poolId = text(LIMITS.poolId).min(1);

export const IPAMData = z.looseObject({
  AddressSpace: text(LIMITS.name).default(''),
  Pool: address,
  Gateway: address.optional(),
  AuxAddresses: boundedRecord(text(LIMITS.name), address, LIMITS.auxAddresses).nullish(),
});
export type IPAMData = z.infer<typeof IPAMData>;

export const CreateNetworkRequest = z.looseObject({
  NetworkID: id,
  Options: anyMap.nullish(),
  IPv4Data: z.array(IPAMData).max(LIMITS.subnets).nullish(),
  IPv6Data: z.array(IPAMData).max(LIMITS.subnets).nullish(),
});
export type CreateNetworkRequest = z.infer<typeof CreateNetworkRequest>;

export const NetworkIdRequest = z.looseObject({ NetworkID: id });

export const EndpointInterface = z.looseObject({
  Address: address.default(''),
  AddressIPv6: address.default(''),
  MacAddress: address.default(''),
});

export const CreateEndpointRequest = z.looseObject({
  NetworkID: id,
  EndpointID: id,
  Interface: EndpointInterface.nullish(),
  Options: anyMap.nullish(),
});
export type CreateEndpointRequest = z.infer<typeof CreateEndpointRequest>;

export const EndpointRequest = z.looseObject({ NetworkID: id, EndpointID: id });
export type EndpointRequest = z.infer<typeof EndpointRequest>;

export const JoinRequest = z.looseObject({
  NetworkID: id,
  EndpointID: id,
  SandboxKey: text(LIMITS.path).default(''),
  Options: anyMap.nullish(),
});
export type JoinRequest = z.infer<typeof JoinRequest>;

export interface JoinResponse {
  InterfaceName: { SrcName: string; DstPrefix: string };
  Gateway?: string;
  GatewayIPv6?: string;
  StaticRoutes?: { Destination: string; RouteType: 0 | 1; NextHop?: string }[];
  DisableGatewayService?: boolean;
}

export const RequestPoolRequest = z.looseObject({
  AddressSpace: text(LIMITS.name).default(''),
  Pool: address.default(''),
  SubPool: address.default(''),
  Options: strMap.nullish(),
  V6: z.boolean().default(false),
});
export const ReleasePoolRequest = z.looseObject({ PoolID: poolId });
export const RequestAddressRequest = z.looseObject({
  PoolID: poolId,
  Address: address.default(''),
  Options: strMap.nullish(),
});
export const ReleaseAddressRequest = z.looseObject({ PoolID: poolId, Address: address.min(1) });

/** Option keys libnetwork puts in CreateNetwork's Options. */
export const netlabel = {
  generic: 'com.docker.network.generic',
  enableIPv6: 'com.docker.network.enable_ipv6',
  internal: 'com.docker.network.internal',
} as const;
