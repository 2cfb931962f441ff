/** What the HTTP API needs from the controller (so it can be served and tested on its own). */
import type { ClusterState, NetworkDefinitionInput, OperatorRelease, OperatorReleased } from '@underlay/core';
import type { EtcdEventLog, Readiness, Registry, SpanContext } from '@underlay/adapters';
import type { NodeDirectory } from '../nodes.js';
import type { ApiTokens } from './tokens.js';

export interface ApiDeps {
  /** The folded cluster state (the leader's, or a standby's that follows the log). */
  state(): ClusterState;
  /** This controller's role and name. */
  status(): { role: string; name: string };
  /** Latest reports and leases of every node. */
  nodes: NodeDirectory;
  /** The event log (GET /v1/events). */
  log: EtcdEventLog;
  /**
   * Defines a cluster network (leader only: throws UnavailableError on a standby). Throws
   * ConflictError with the difference when the name exists with another definition, InvalidArgumentError
   * for a bad definition. `created` is false when the same network already exists.
   */
  createNetwork(name: string, definition: NetworkDefinitionInput, actor: string, trace?: RequestTrace): Promise<{ created: boolean }>;
  /** Removes a cluster network (leader only). NotFoundError, or ConflictError naming hosts and containers still attached. */
  removeNetwork(name: string, actor: string, trace?: RequestTrace): Promise<void>;
  /**
   * An operator frees one endpoint address (leader only). ConflictError naming the container and host while a node's
   * report shows it live (or its node holds it for a restart), NotFoundError when it is not allocated.
   */
  releaseAddress(req: OperatorRelease, actor: string, trace?: RequestTrace): Promise<OperatorReleased>;
  /** GET /metrics and /readyz (no token), and the HTTP metrics of every request (route pattern, status, seconds). */
  telemetry: { registry: Registry; readiness(): Promise<Readiness>; http?(route: string, code: number, seconds: number): void };
  /** The named bearer tokens /v1 requests must carry (one of them); its name is the request's actor. */
  tokens: ApiTokens;
}

/** Tracing on: the API request's SERVER span and route, passed explicitly to the writes it makes. */
export interface RequestTrace {
  span?: SpanContext;
  operation?: string;
}
