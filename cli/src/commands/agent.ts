import { Agent, AgentConfig } from '@underlay/node-agent';
import { openLinkOps, startTracing } from '@underlay/adapters';
import type { FlagSpec } from '../flags.js';
import { runService, serviceLog, withTracing } from './run.js';

export const agentFlags: FlagSpec[] = [
  { key: 'node', flag: 'node', help: 'this host\'s node name (required)' },
  { key: 'nats', flag: 'nats', list: true, help: 'NATS servers, comma-separated: one, or those of a NATS cluster (required)' },
  { key: 'natsCreds', flag: 'nats-creds', value: 'FILE', help: 'NATS credentials of this node (underlay creds node NAME --out FILE)' },
  { key: 'natsCa', flag: 'nats-ca', value: 'FILE', help: 'NATS TLS: CA certificates that signed the server\'s certificate' },
  { key: 'natsCert', flag: 'nats-cert', value: 'FILE', help: 'NATS TLS: client certificate' },
  { key: 'natsKey', flag: 'nats-key', value: 'FILE', help: 'NATS TLS: client certificate\'s key' },
  { key: 'docker', flag: 'docker', help: 'Docker Engine socket (unix:///var/run/docker.sock)' },
  { key: 'pluginDir', flag: 'plugin-dir', help: 'where Docker looks for plugin sockets (/run/docker/plugins)' },
  { key: 'driverName', flag: 'driver-name', value: 'NAME', help: 'the name Docker knows this plugin by: underlay (socket plugin), underlay/underlay:VERSION (managed plugin) (underlay)' },
  { key: 'stateDir', flag: 'state-dir', help: 'local state (/var/lib/underlay)' },
  { key: 'listen', flag: 'listen', help: 'GET /metrics, /healthz, /readyz on HOST:PORT, no token; \'\' or off turns it off (127.0.0.1:7411)' },
  { key: 'reportIntervalMs', flag: 'report-interval-ms', help: 'how often to report (renews the node lease) (5000)' },
  { key: 'leaseMs', flag: 'lease-ms', help: 'node is NotReady after this long without a report (3 report intervals)' },
  { key: 'address', flag: 'address', help: 'this host\'s address on the underlay (first IPv4 address)' },
  { key: 'parentMap', flag: 'parent-map', list: true, help: 'cluster parent names to local ones: eth0=ens3,eth1=ens4' },
  { key: 'addressHoldMs', flag: 'address-hold-ms', help: 'an address a container here released is handed back first to the next container here for this long, so a restarted container keeps its address; 0: released at once (60000)' },
  { key: 'reconcileIntervalMs', flag: 'reconcile-interval-ms', help: 'how often to check cluster networks against Docker (10000)' },
  { key: 'routes', flag: 'routes', boolean: true, help: 'program routes to other hosts\' blocks for ipvlan l3/l3s (true)' },
  { key: 'routeReconcileMs', flag: 'route-reconcile-ms', help: 'how often routes are checked against the kernel (10000)' },
  { key: 'bgpAsn', flag: 'bgp-asn', help: 'BGP: this host\'s AS number (BGP is off without it)' },
  { key: 'bgpRouterId', flag: 'bgp-router-id', help: 'BGP: router id (the host address)' },
  { key: 'bgpPeers', flag: 'bgp-peers', list: true, help: 'BGP: peers as ADDRESS:ASN,… (e.g. 198.51.100.254:65000)' },
  { key: 'bgpApi', flag: 'bgp-api', help: 'BGP: gobgpd gRPC API on loopback or unix:PATH (127.0.0.1:50051)' },
  { key: 'bgpInstallLearned', flag: 'bgp-install-learned', boolean: true, help: 'BGP: install routes learned from peers' },
];

export function agentCommand(argv: string[]): Promise<number> {
  return runService(argv, agentFlags, AgentConfig, (cfg, logSettings) => {
    const logger = serviceLog(logSettings, 'underlay-agent', `agent ${cfg.node}`, cfg.node);
    // Traces, when the OTEL_* variables configure an exporter (off otherwise).
    const tracing = startTracing({ service: 'underlay-agent', instance: cfg.node, logger });
    return { service: withTracing(new Agent(cfg, () => openLinkOps(), logger), tracing), logger };
  });
}
