import { Controller, ControllerConfig, HTTP_LIMITS, type HttpLimits } from '@underlay/controller';
import { startTracing } from '@underlay/adapters';
import type { FlagSpec } from '../flags.js';
import { runService, serviceLog, withTracing } from './run.js';

/** Flags of the HTTP API's limits, with their default and range from the controller. */
function limitFlags(rows: [key: string, flag: string, limit: keyof HttpLimits, help: string][]): FlagSpec[] {
  return rows.map(([key, flag, limit, help]) => {
    const b = HTTP_LIMITS[limit];
    return { key, flag, value: 'N', help: `${help} (${b.default}; ${b.min}-${b.max})` };
  });
}

export const controllerFlags: FlagSpec[] = [
  { key: 'etcd', flag: 'etcd', list: true, help: 'etcd endpoints, comma-separated (http://127.0.0.1:2379)' },
  { key: 'nats', flag: 'nats', list: true, help: 'NATS servers, comma-separated: one, or those of a NATS cluster (nats://127.0.0.1:4222)' },
  { key: 'natsCreds', flag: 'nats-creds', value: 'FILE', help: 'NATS credentials of this controller (underlay creds controller NAME --out FILE)' },
  { key: 'natsCa', flag: 'nats-ca', value: 'FILE', help: 'NATS TLS: CA certificates that signed the server\'s certificate' },
  { key: 'natsCert', flag: 'nats-cert', value: 'FILE', help: 'NATS TLS: client certificate' },
  { key: 'natsKey', flag: 'nats-key', value: 'FILE', help: 'NATS TLS: client certificate\'s key' },
  { key: 'listen', flag: 'listen', help: 'HTTP API address HOST:PORT (127.0.0.1:7410)' },
  { key: 'name', flag: 'name', help: 'this controller\'s name, unique per controller (controller)' },
  { key: 'leaseTtlSeconds', flag: 'lease-ttl', help: 'leader lease TTL in seconds; failover takes about this long (2)' },
  { key: 'snapshotEvery', flag: 'snapshot-every', help: 'write a state snapshot every N events (10000)' },
  { key: 'eventRetention', flag: 'event-retention', value: 'N', help: 'after each snapshot, delete the etcd events older than N events before it (100000; 0 = never)' },
  { key: 'etcdCompact', flag: 'etcd-compact', boolean: true, help: 'compact etcd\'s history after trimming the event log (true; --etcd-compact=false to leave it to etcd)' },
  { key: 'etcdCompactMargin', flag: 'etcd-compact-margin', value: 'N', help: 'compact up to the current etcd revision minus N (1000)' },
  { key: 'etcdTimeoutMs', flag: 'etcd-timeout-ms', value: 'MS', help: 'deadline of every etcd call; a call etcd does not answer in time fails as unavailable (5000; 100-120000)' },
  { key: 'etcdCa', flag: 'etcd-ca', value: 'FILE', help: 'etcd TLS: CA certificates that signed etcd\'s server certificate (PEM)' },
  { key: 'etcdCert', flag: 'etcd-cert', value: 'FILE', help: 'etcd TLS: client certificate (PEM; with --etcd-key)' },
  { key: 'etcdKey', flag: 'etcd-key', value: 'FILE', help: 'etcd TLS: the client certificate\'s key (PEM)' },
  { key: 'etcdUser', flag: 'etcd-user', value: 'NAME', help: 'etcd user (with --etcd-password-file)' },
  { key: 'etcdPasswordFile', flag: 'etcd-password-file', value: 'FILE', help: 'file holding the etcd user\'s password; must not be readable by others (chmod 600)' },
  { key: 'collectIntervalMs', flag: 'collect-interval-ms', help: 'leak and empty-block collection interval (30000)' },
  { key: 'unboundGraceMs', flag: 'unbound-grace-ms', help: 'an address never bound to an endpoint this long is a leak (60000)' },
  { key: 'nodeExpiredMs', flag: 'node-expired-ms', help: 'addresses of a node unseen this long are reclaimed (3600000)' },
  { key: 'blockGraceMs', flag: 'block-grace-ms', help: 'an empty block goes back to the pool after this long (300000)' },
  { key: 'nodeLeaseMs', flag: 'node-lease-ms', help: 'a node that sent no report this long is NotReady (15000)' },
  { key: 'maxPoolPrefixV4', flag: 'max-pool-prefix-v4', value: 'N', help: 'refuse IPv4 pools larger than /N (8)' },
  { key: 'maxPoolPrefixV6', flag: 'max-pool-prefix-v6', value: 'N', help: 'refuse IPv6 pools larger than /N (48)' },
  { key: 'streamMaxBytes', flag: 'stream-max-bytes', help: 'JetStream event stream: most bytes kept, oldest dropped first (1073741824; 1 MiB to 1 TiB)' },
  { key: 'streamMaxAgeMs', flag: 'stream-max-age-ms', help: 'JetStream event stream: events older than this are dropped (604800000 = 7 days; 1 minute to 365 days)' },
  { key: 'streamMaxMsgs', flag: 'stream-max-msgs', help: 'JetStream event stream: most events kept, oldest dropped first (1000000; 1000 to 1000000000)' },
  { key: 'eventsReplicas', flag: 'events-replicas', value: 'N', help: 'JetStream event stream: copies kept on N servers of the NATS cluster; 3 survives one server down (1; 1-5)' },
  { key: 'apiToken', flag: 'api-token', value: 'TOKEN', help: 'bearer token the HTTP API requires on /v1 (16+ characters; prefer --api-token-file)' },
  { key: 'apiTokenFile', flag: 'api-token-file', value: 'FILE', help: 'API tokens, one "NAME TOKEN" per line (NAME is the actor of its events; a bare token is named api); must be mode 0600; made with a random token if missing' },
  { key: 'tlsCert', flag: 'tls-cert', value: 'FILE', help: 'serve the HTTP API over HTTPS with this certificate chain (PEM; with --tls-key)' },
  { key: 'tlsKey', flag: 'tls-key', value: 'FILE', help: 'the key of --tls-cert (PEM)' },
  ...limitFlags([
    ['httpHeadersTimeoutMs', 'http-headers-timeout-ms', 'headersTimeoutMs', 'time a client has to send its request headers'],
    ['httpRequestTimeoutMs', 'http-request-timeout-ms', 'requestTimeoutMs', 'time a client has to send a whole request; also a stalled connection\'s limit'],
    ['httpIdleTimeoutMs', 'http-idle-timeout-ms', 'idleTimeoutMs', 'time a kept-alive connection may wait for its next request'],
    ['httpMaxHeaderBytes', 'http-max-header-bytes', 'maxHeaderBytes', 'largest request head'],
    ['httpMaxConnections', 'http-max-connections', 'maxConnections', 'open HTTP connections at most'],
    ['httpMaxBodyBytes', 'http-max-body-bytes', 'maxBodyBytes', 'largest request body (refused before it is read)'],
    ['eventsFollowMax', 'events-follow-max', 'followMax', 'events --follow streams open at once'],
    ['eventsFollowMaxMs', 'events-follow-max-ms', 'followMaxMs', 'a follow stream ends after this long (the CLI reopens it)'],
    ['eventsFollowStallMs', 'events-follow-stall-ms', 'followStallMs', 'a follow client that reads nothing this long is dropped'],
  ]),
];

export function controllerCommand(argv: string[]): Promise<number> {
  return runService(argv, controllerFlags, ControllerConfig, (cfg, logSettings) => {
    const logger = serviceLog(logSettings, 'underlay-controller', `controller ${cfg.name}`, cfg.name);
    // Traces, when the OTEL_* variables configure an exporter (off otherwise).
    const tracing = startTracing({ service: 'underlay-controller', instance: cfg.name, logger, contextPropagation: 'explicit' });
    return { service: withTracing(new Controller(cfg, logger), tracing), logger };
  });
}
