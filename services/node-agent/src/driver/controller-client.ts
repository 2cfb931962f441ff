/** The agent's ControllerClient over NATS request/reply (adapters' RpcClient), for the node the RpcClient speaks for. */
import type { RpcClient } from '@underlay/adapters';
import { BindEndpointRes, EmptyRes, NetworkNameRes, NetworkRemoveRes, RequestAddressRes, RequestPoolRes } from '@underlay/core';
import type { ControllerClient } from './context.js';

export function rpcControllerClient(rpc: RpcClient): ControllerClient {
  const node = rpc.node;
  const empty = async (p: Promise<unknown>): Promise<void> => {
    await p;
  };
  return {
    requestPool: (req) => rpc.call('requestPool', { node, ...req }, RequestPoolRes),
    releasePool: (req) => empty(rpc.call('releasePool', { node, ...req }, EmptyRes)),
    requestAddress: (req) => rpc.call('requestAddress', { node, ...req }, RequestAddressRes),
    releaseAddress: (req) => empty(rpc.call('releaseAddress', { node, ...req }, EmptyRes)),
    bindEndpoint: (req) => rpc.call('bindEndpoint', { node, ...req }, BindEndpointRes),
    networkRecord: (req) => empty(rpc.call('networkRecord', { node, ...req }, EmptyRes)),
    networkName: (req) => rpc.call('networkName', { node, ...req }, NetworkNameRes),
    networkRemove: (req, opts) => rpc.call('networkRemove', { node, ...req }, NetworkRemoveRes, opts),
    nodeReport: (report, opts) => empty(rpc.call('nodeReport', report, EmptyRes, opts)),
  };
}
