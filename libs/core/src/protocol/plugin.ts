/**
 * Docker's remote plugin protocol (NetworkDriver + IpamDriver), as libnetwork speaks it.
 * Field names follow libnetwork's drivers/remote/api and ipams/remote/api exactly.
 * Requests are loose objects: Docker may add fields in later versions.
 */
import { z } from 'zod';

export const PLUGIN_NAME = 'underlay';
export const IMPLEMENTS = ['NetworkDriver', 'IpamDriver'] as const;
/** Address spaces our IpamDriver announces; pools outside them did not come from underlay. */
export const LOCAL_ADDRESS_SPACE = 'underlay';
export const GLOBAL_ADDRESS_SPACE = 'underlay-global';

const strMap = z.record(z.string(), z.string());
const anyMap = z.record(z.string(), z.unknown());

export const IPAMData = z.looseObject({
  AddressSpace: z.string().default(''),
  Pool: z.string(),
  Gateway: z.string().optional(),
  AuxAddresses: strMap.nullish(),
});
export type IPAMData = z.infer<typeof IPAMData>;

export const CreateNetworkRequest = z.looseObject({
  NetworkID: z.string().min(1),
  Options: anyMap.nullish(),
  IPv4Data: z.array(IPAMData).nullish(),
  IPv6Data: z.array(IPAMData).nullish(),
});
export type CreateNetworkRequest = z.infer<typeof CreateNetworkRequest>;

export const NetworkIdRequest = z.looseObject({ NetworkID: z.string().min(1) });

export const EndpointInterface = z.looseObject({
  Address: z.string().default(''),
  AddressIPv6: z.string().default(''),
  MacAddress: z.string().default(''),
});

export const CreateEndpointRequest = z.looseObject({
  NetworkID: z.string().min(1),
  EndpointID: z.string().min(1),
  Interface: EndpointInterface.nullish(),
  Options: anyMap.nullish(),
});
export type CreateEndpointRequest = z.infer<typeof CreateEndpointRequest>;

export const EndpointRequest = z.looseObject({ NetworkID: z.string().min(1), EndpointID: z.string().min(1) });
export type EndpointRequest = z.infer<typeof EndpointRequest>;

export const JoinRequest = z.looseObject({
  NetworkID: z.string().min(1),
  EndpointID: z.string().min(1),
  SandboxKey: z.string().default(''),
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
  AddressSpace: z.string().default(''),
  Pool: z.string().default(''),
  SubPool: z.string().default(''),
  Options: strMap.nullish(),
  V6: z.boolean().default(false),
});
export const ReleasePoolRequest = z.looseObject({ PoolID: z.string().min(1) });
export const RequestAddressRequest = z.looseObject({
  PoolID: z.string().min(1),
  Address: z.string().default(''),
  Options: strMap.nullish(),
});
export const ReleaseAddressRequest = z.looseObject({ PoolID: z.string().min(1), Address: z.string().min(1) });

/** Option keys libnetwork puts in CreateNetwork's Options. */
export const netlabel = {
  generic: 'com.docker.network.generic',
  enableIPv6: 'com.docker.network.enable_ipv6',
  internal: 'com.docker.network.internal',
} as const;
