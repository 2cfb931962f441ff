/**
 * The controller's view of node liveness and status: the latest report of every agent and when it
 * came. Reports renew a node's lease; a node whose lease ran out is NotReady. Every controller
 * (leader and standbys) listens to the reports, so a new leader starts with the same view.
 * Kept in memory only: the next report after a restart refills it.
 */
import { formatValue, reportedAddresses, tryParseAddr, type ContainerLookup, type HeldLookup, type NodeLiveness, type NodeReport } from '@underlay/core';

export interface NodeEntry {
  node: string;
  lastSeenMs: number;
  leaseMs: number;
  report: NodeReport;
}

export class NodeDirectory {
  private readonly entries = new Map<string, NodeEntry>();
  /** The leak rules' view (same data, the shape core's collector reads). */
  readonly liveness = new Map<string, NodeLiveness>();

  constructor(private readonly defaultLeaseMs: number) {}

  record(report: NodeReport, nowMs = Date.now()): void {
    this.entries.set(report.node, { node: report.node, lastSeenMs: nowMs, leaseMs: report.leaseMs ?? this.defaultLeaseMs, report });
    const held = new Set((report.heldAddresses ?? []).flatMap((x) => {
      const a = tryParseAddr(x);
      return a ? [formatValue(a.family, a.value)] : [];
    }));
    this.liveness.set(report.node, { lastSeenMs: nowMs, report: { atMs: nowMs, endpoints: new Set(report.endpoints), addresses: reportedAddresses(report.endpointStates), held } });
  }

  get(node: string): NodeEntry | undefined {
    return this.entries.get(node);
  }

  all(): NodeEntry[] {
    return [...this.entries.values()].sort((a, b) => a.node.localeCompare(b.node));
  }

  /** Ready while the lease holds. */
  ready(node: string, nowMs = Date.now()): boolean {
    const e = this.entries.get(node);
    return !!e && nowMs - e.lastSeenMs <= e.leaseMs;
  }

  /** The node's latest report says it holds the address for a container's restart (no endpoint holds it). */
  readonly heldBy: HeldLookup = (node, address) => this.liveness.get(node)?.report?.held?.has(address) ?? false;

  /** The container holding an endpoint, as its node last reported. */
  readonly containerOf: ContainerLookup = (node, endpointId) =>
    this.entries.get(node)?.report.endpointStates.find((e) => e.endpointId === endpointId)?.container;
}
