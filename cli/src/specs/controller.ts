/**
 * `underlay controller`'s flags, without the controller's code: the config file, the help and the completion
 * need them, and loading etcd and NATS for those would be slow. The defaults are ControllerConfig's
 * (services/controller/src/config.ts; test/unit/cli-flags.test.ts checks they agree).
 */
import { DEFAULT_POOL_LIMITS } from '@underlay/core';
// The limits alone (this module loads no etcd or NATS code).
import { HTTP_LIMITS, type HttpLimits } from '@underlay/controller/dist/api/limits.js';
import type { FlagSpec } from '../flags.js';

/** Flags of the HTTP API's limits, with their default and range from the controller. */
function limitFlags(rows: [key: string, flag: string, limit: keyof HttpLimits, help: string][]): FlagSpec[] {
  return rows.map(([key, flag, limit, help]) => {
    const b = HTTP_LIMITS[limit];
    return { key, flag, value: 'N', help: `${help} (${b.min}-${b.max})`, default: b.default };
  });
}

export const controllerFlags: FlagSpec[] = [
  { key: 'etcd', flag: 'etcd', list: true, value: 'URLS', help: 'etcd endpoints, comma-separated, e.g. http://127.0.0.1:2379 (required)' },
  { key: 'nats', flag: 'nats', list: true, value: 'URLS', help: 'NATS servers, comma-separated: one, or every server of a NATS cluster, e.g. nats://127.0.0.1:4222 (required)' },
  { key: 'natsCreds', flag: 'nats-creds', value: 'FILE', help: 'NATS credentials of this controller (underlay creds controller NAME --out FILE)' },
  { key: 'natsCa', flag: 'nats-ca', value: 'FILE', help: 'NATS TLS: CA certificates that signed the server\'s certificate' },
  { key: 'natsCert', flag: 'nats-cert', value: 'FILE', help: 'NATS TLS: client certificate' },
  { key: 'natsKey', flag: 'nats-key', value: 'FILE', help: 'NATS TLS: client certificate\'s key' },
  { key: 'listen', flag: 'listen', value: 'HOST:PORT', help: 'HTTP API address', default: '127.0.0.1:7410' },
  { key: 'name', flag: 'name', value: 'NAME', help: 'this controller\'s name, unique per controller', default: 'controller' },
  { key: 'leaseTtlSeconds', flag: 'lease-ttl', value: 'SECONDS', help: 'leader lease TTL in seconds; failover takes about this long', default: 2 },
  { key: 'snapshotEvery', flag: 'snapshot-every', value: 'N', help: 'write a state snapshot every N events', default: 10_000 },
  { key: 'eventRetention', flag: 'event-retention', value: 'N', help: 'after each snapshot, delete the etcd events older than N events before it (0 = never)', default: 100_000 },
  { key: 'etcdCompact', flag: 'etcd-compact', boolean: true, help: 'compact etcd\'s history after trimming the event log (--no-etcd-compact or --etcd-compact=false leaves it to etcd)', default: true },
  { key: 'etcdCompactMargin', flag: 'etcd-compact-margin', value: 'N', help: 'compact up to the current etcd revision minus N', default: 1_000 },
  { key: 'etcdTimeoutMs', flag: 'etcd-timeout-ms', value: 'MS', help: 'deadline of every etcd call; a call etcd does not answer in time fails as unavailable (100-120000)', default: 5_000 },
  { key: 'etcdCa', flag: 'etcd-ca', value: 'FILE', help: 'etcd TLS: CA certificates that signed etcd\'s server certificate (PEM)' },
  { key: 'etcdCert', flag: 'etcd-cert', value: 'FILE', help: 'etcd TLS: client certificate (PEM; with --etcd-key)' },
  { key: 'etcdKey', flag: 'etcd-key', value: 'FILE', help: 'etcd TLS: the client certificate\'s key (PEM)' },
  { key: 'etcdUser', flag: 'etcd-user', value: 'NAME', help: 'etcd user (with --etcd-password-file)' },
  { key: 'etcdPasswordFile', flag: 'etcd-password-file', value: 'FILE', help: 'file holding the etcd user\'s password; must not be readable by others (chmod 600)' },
  { key: 'collectIntervalMs', flag: 'collect-interval-ms', value: 'MS', help: 'leak and empty-block collection interval', default: 30_000 },
  { key: 'unboundGraceMs', flag: 'unbound-grace-ms', value: 'MS', help: 'an address never bound to an endpoint this long is a leak', default: 60_000 },
  { key: 'nodeExpiredMs', flag: 'node-expired-ms', value: 'MS', help: 'addresses of a node unseen this long are reclaimed', default: 3_600_000 },
  { key: 'blockGraceMs', flag: 'block-grace-ms', value: 'MS', help: 'an empty block goes back to the pool after this long', default: 300_000 },
  { key: 'nodeLeaseMs', flag: 'node-lease-ms', value: 'MS', help: 'a node that sent no report this long is NotReady', default: 15_000 },
  { key: 'maxPoolPrefixV4', flag: 'max-pool-prefix-v4', value: 'N', help: 'refuse IPv4 pools larger than /N', default: DEFAULT_POOL_LIMITS.maxPoolPrefixV4 },
  { key: 'maxPoolPrefixV6', flag: 'max-pool-prefix-v6', value: 'N', help: 'refuse IPv6 pools larger than /N', default: DEFAULT_POOL_LIMITS.maxPoolPrefixV6 },
  { key: 'streamMaxBytes', flag: 'stream-max-bytes', value: 'BYTES', help: 'JetStream event stream: most bytes kept, oldest dropped first (1 MiB to 1 TiB)', default: 1024 ** 3 },
  { key: 'streamMaxAgeMs', flag: 'stream-max-age-ms', value: 'MS', help: 'JetStream event stream: events older than this are dropped (7 days; 1 minute to 365 days)', default: 7 * 24 * 3_600_000 },
  { key: 'streamMaxMsgs', flag: 'stream-max-msgs', value: 'N', help: 'JetStream event stream: most events kept, oldest dropped first (1000 to 1000000000)', default: 1_000_000 },
  { key: 'eventsReplicas', flag: 'events-replicas', value: 'N', help: 'JetStream event stream: how many servers of the NATS cluster keep it; 3 on a three-node cluster survives one server down (1-5)', default: 1 },
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
