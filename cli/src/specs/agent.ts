/**
 * `underlay agent`'s flags, without the agent's code (netlink, NATS): the config file, the help and the
 * completion need them. The defaults are AgentConfig's (services/node-agent/src/config.ts;
 * test/unit/cli-flags.test.ts checks they agree).
 */
import type { FlagSpec } from '../flags.js';

export const agentFlags: FlagSpec[] = [
  { key: 'node', flag: 'node', value: 'NAME', help: 'this host\'s node name (required)' },
  { key: 'nats', flag: 'nats', list: true, value: 'URLS', help: 'NATS servers, comma-separated: one, or every server of a NATS cluster (required)' },
  { key: 'natsCreds', flag: 'nats-creds', value: 'FILE', help: 'NATS credentials of this node (underlay creds node NAME --out FILE)' },
  { key: 'natsCa', flag: 'nats-ca', value: 'FILE', help: 'NATS TLS: CA certificates that signed the server\'s certificate' },
  { key: 'natsCert', flag: 'nats-cert', value: 'FILE', help: 'NATS TLS: client certificate' },
  { key: 'natsKey', flag: 'nats-key', value: 'FILE', help: 'NATS TLS: client certificate\'s key' },
  { key: 'docker', flag: 'docker', value: 'URL', help: 'Docker Engine socket', default: 'unix:///var/run/docker.sock' },
  { key: 'pluginDir', flag: 'plugin-dir', value: 'DIR', help: 'where Docker looks for plugin sockets', default: '/run/docker/plugins' },
  { key: 'driverName', flag: 'driver-name', value: 'NAME', help: 'the name Docker knows this plugin by: underlay (socket plugin), underlay/underlay:VERSION (managed plugin)', default: 'underlay' },
  { key: 'stateDir', flag: 'state-dir', value: 'DIR', help: 'local state', default: '/var/lib/underlay' },
  { key: 'listen', flag: 'listen', value: 'HOST:PORT', help: 'GET /metrics, /healthz, /readyz on HOST:PORT, no token; \'\' or off turns it off', default: '127.0.0.1:7411' },
  { key: 'reportIntervalMs', flag: 'report-interval-ms', value: 'MS', help: 'how often to report (renews the node lease)', default: 5_000 },
  { key: 'leaseMs', flag: 'lease-ms', value: 'MS', help: 'node is NotReady after this long without a report (default: 3 report intervals)' },
  { key: 'address', flag: 'address', value: 'IP[,IP6]', help: 'this host\'s address on the underlay (default: its first IPv4 address)' },
  { key: 'parentMap', flag: 'parent-map', list: true, value: 'MAP', help: 'cluster parent names to local ones: eth0=ens3,eth1=ens4' },
  { key: 'addressHoldMs', flag: 'address-hold-ms', value: 'MS', help: 'an address a container here released is handed back first to the next container here for this long, so a restarted container keeps its address; 0: released at once', default: 60_000 },
  { key: 'stickyHoldMs', flag: 'sticky-hold-ms', value: 'MS', help: 'on a network with --ipam-opt sticky=true, an address a container here released is held this long for a container of the same name here; 0: released at once', default: 600_000 },
  { key: 'startupWaitMs', flag: 'startup-wait-ms', value: 'MS', help: 'the plugin socket is served at once; a Docker call that comes while the agent starts (connecting to NATS, reading Docker) waits this long for it, then fails naming what the agent is doing', default: 25_000 },
  { key: 'reconcileIntervalMs', flag: 'reconcile-interval-ms', value: 'MS', help: 'how often to check cluster networks against Docker', default: 10_000 },
  { key: 'routes', flag: 'routes', boolean: true, help: 'program routes to other hosts\' blocks for ipvlan l3/l3s (--no-routes: off)', default: true },
  { key: 'routeReconcileMs', flag: 'route-reconcile-ms', value: 'MS', help: 'how often routes are checked against the kernel', default: 10_000 },
  { key: 'bgpAsn', flag: 'bgp-asn', value: 'ASN', help: 'BGP: this host\'s AS number (BGP is off without it)' },
  { key: 'bgpRouterId', flag: 'bgp-router-id', value: 'IP', help: 'BGP: router id (default: the host address)' },
  { key: 'bgpPeers', flag: 'bgp-peers', list: true, value: 'PEERS', help: 'BGP: peers as ADDRESS:ASN,… (e.g. 198.51.100.254:65000)' },
  { key: 'bgpApi', flag: 'bgp-api', value: 'ADDRESS', help: 'BGP: gobgpd gRPC API on loopback or unix:PATH', default: '127.0.0.1:50051' },
  { key: 'bgpInstallLearned', flag: 'bgp-install-learned', boolean: true, help: 'BGP: install routes learned from peers' },
];
