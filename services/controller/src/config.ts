import { z } from 'zod';
import { DEFAULT_POOL_LIMITS, LIMITS } from '@underlay/core';
import { HTTP_LIMITS } from './api/limits.js';
import { DEFAULT_ETCD_TIMEOUT_MS, DEFAULT_STREAM_LIMITS, MAX_ETCD_TIMEOUT_MS, MAX_STREAM_REPLICAS, MIN_ETCD_TIMEOUT_MS, STREAM_LIMIT_BOUNDS, NatsServers } from '@underlay/adapters';

const url = (what: string) =>
  z.string().regex(/^[a-z][a-z0-9+.-]*:\/\/[^\s,]+$/i, `${what} must be a URL such as http://127.0.0.1:2379`);
/** A bounded HTTP API limit, with its default (api/limits.ts). */
const limit = (key: keyof typeof HTTP_LIMITS, what: string, unit: string) => {
  const b = HTTP_LIMITS[key];
  return z.coerce.number().int(`${what} must be a whole number of ${unit}`).min(b.min, `${what} must be ${b.min} to ${b.max} ${unit}`).max(b.max, `${what} must be ${b.min} to ${b.max} ${unit}`).default(b.default);
};
/** Milliseconds, at most LIMITS.timerMs (2^31-1): Node.js fires a longer setTimeout/setInterval at once. `what` names the flag. */
const ms = (what: string) =>
  z.coerce
    .number()
    .int(`${what} must be a whole number of milliseconds`)
    .positive(`${what} must be positive`)
    .max(LIMITS.timerMs, `${what} must be at most ${LIMITS.timerMs} ms (about 24.8 days, the longest timer Node.js keeps)`);
/** A bounded JetStream stream limit, with its default (adapters' nats/events.ts). */
const streamLimit = (key: keyof typeof STREAM_LIMIT_BOUNDS, flag: string, unit: string) => {
  const { min, max } = STREAM_LIMIT_BOUNDS[key];
  return z.coerce.number().int(`${flag} must be a whole number of ${unit}`).min(min, `${flag} must be ${min} to ${max} ${unit}`).max(max, `${flag} must be ${min} to ${max} ${unit}`).default(DEFAULT_STREAM_LIMITS[key]);
};
/** The shortest prefix allowed for a pool of one family: 0 (anything) to the family's bits. */
const poolPrefix = (flag: string, bits: number, dflt: number) =>
  z.coerce.number().int(`${flag} must be a whole prefix length`).min(0, `${flag} must be 0 to ${bits}`).max(bits, `${flag} must be 0 to ${bits}`).default(dflt);

export const ControllerConfig = z.object({
  etcd: z.array(url('each etcd endpoint').max(LIMITS.path, `each etcd endpoint is at most ${LIMITS.path} characters`)).min(1, 'at least one etcd endpoint is needed').max(64, 'at most 64 etcd endpoints'),
  /** The NATS servers (of one cluster): the connection moves to another when the one it uses goes away. */
  nats: NatsServers,
  /** NATS credentials (a `.creds` file from `underlay creds controller NAME`) and TLS files (CA, client certificate, key). */
  natsCreds: z.string().min(1).optional(),
  natsCa: z.string().min(1).optional(),
  natsCert: z.string().min(1).optional(),
  natsKey: z.string().min(1).optional(),
  /** HOST:PORT for the HTTP API. */
  listen: z.string().regex(/^[^\s:]*:\d{1,5}$/, 'listen must be HOST:PORT, for example 127.0.0.1:7410').default('127.0.0.1:7410'),
  /** Name used as this controller's identity (leader key value, logs). */
  name: z.string().min(1).max(LIMITS.name, `--name is at most ${LIMITS.name} characters`).default('controller'),
  /** Leader lease TTL: a standby takes over within about this long after the leader dies. */
  leaseTtlSeconds: z.coerce.number().int('--lease-ttl must be whole seconds').min(1, '--lease-ttl must be 1 to 60 seconds').max(60, '--lease-ttl must be 1 to 60 seconds').default(2),
  /** Write a snapshot every this many events. */
  snapshotEvery: z.coerce
    .number()
    .int('--snapshot-every must be a whole number of events')
    .min(1, '--snapshot-every must be 1 to 10000000 events')
    .max(10_000_000, '--snapshot-every must be 1 to 10000000 events')
    .default(10_000),
  /** etcd client TLS (CA, client certificate and key, PEM files) and user (password read from a 0600 file). */
  etcdCa: z.string().min(1).optional(),
  etcdCert: z.string().min(1).optional(),
  etcdKey: z.string().min(1).optional(),
  etcdUser: z.string().min(1).max(256).optional(),
  etcdPasswordFile: z.string().min(1).optional(),
  /** Deadline of every etcd call. */
  etcdTimeoutMs: z.coerce
    .number()
    .int('the etcd timeout must be a whole number of milliseconds')
    .min(MIN_ETCD_TIMEOUT_MS, `the etcd timeout must be ${MIN_ETCD_TIMEOUT_MS} to ${MAX_ETCD_TIMEOUT_MS} ms`)
    .max(MAX_ETCD_TIMEOUT_MS, `the etcd timeout must be ${MIN_ETCD_TIMEOUT_MS} to ${MAX_ETCD_TIMEOUT_MS} ms`)
    .default(DEFAULT_ETCD_TIMEOUT_MS),
  /** Events kept before the latest snapshot's seq; older ones are deleted after each snapshot (0: never trim). */
  eventRetention: z.coerce.number().int('the event retention must be a whole number of events').min(0, 'the event retention must be 0 (never trim) or more').max(1_000_000_000, 'the event retention must be at most 1000000000').default(100_000),
  /** Compact etcd's history after trimming, to the current revision minus etcdCompactMargin revisions. */
  etcdCompact: z.boolean().default(true),
  etcdCompactMargin: z.coerce.number().int('the compaction margin must be a whole number of revisions').min(0).max(1_000_000_000).default(1_000),
  /** Collector pass interval, and the leak and block rules' periods. */
  collectIntervalMs: ms('--collect-interval-ms').default(30_000),
  unboundGraceMs: ms('--unbound-grace-ms').default(60_000),
  reportSlackMs: ms('the report slack (reportSlackMs)').default(10_000),
  nodeExpiredMs: ms('--node-expired-ms').default(3_600_000),
  blockGraceMs: ms('--block-grace-ms').default(300_000),
  /** A node that sent no report for this long is NotReady (agents may ask for their own lease). */
  nodeLeaseMs: ms('--node-lease-ms').default(15_000),
  /** The JetStream event stream's limits (discard old), applied to an existing stream too: 1 GiB, 7 days, 1,000,000 events. */
  streamMaxBytes: streamLimit('maxBytes', '--stream-max-bytes', 'bytes'),
  streamMaxAgeMs: streamLimit('maxAgeMs', '--stream-max-age-ms', 'ms'),
  streamMaxMsgs: streamLimit('maxMsgs', '--stream-max-msgs', 'events'),
  /**
   * How many JetStream servers keep the event stream (3 on a three-node NATS cluster: the stream survives one server
   * down). Applied when the stream is made, and to an existing stream with another count (JetStream copies it).
   */
  eventsReplicas: z.coerce
    .number()
    .int('--events-replicas must be a whole number')
    .min(1, `--events-replicas must be 1 to ${MAX_STREAM_REPLICAS}`)
    .max(MAX_STREAM_REPLICAS, `--events-replicas must be 1 to ${MAX_STREAM_REPLICAS}`)
    .default(1),
  /**
   * The largest pools handed out, as the shortest prefix allowed (default /8 for IPv4, /48 for IPv6): a
   * larger --subnet is refused with the limit in the message.
   */
  maxPoolPrefixV4: poolPrefix('--max-pool-prefix-v4', 32, DEFAULT_POOL_LIMITS.maxPoolPrefixV4),
  maxPoolPrefixV6: poolPrefix('--max-pool-prefix-v6', 128, DEFAULT_POOL_LIMITS.maxPoolPrefixV6),
  /** Bearer token the HTTP API requires on /v1 (or read from apiTokenFile). */
  apiToken: z.string().min(16, 'the API token must be at least 16 characters').optional(),
  apiTokenFile: z.string().min(1).optional(),
  /** HTTPS for the API: certificate chain and key, PEM files (both or neither). */
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  /** The HTTP API's limits (api/limits.ts: defaults and bounds). */
  httpHeadersTimeoutMs: limit('headersTimeoutMs', 'the headers timeout', 'ms'),
  httpRequestTimeoutMs: limit('requestTimeoutMs', 'the request timeout', 'ms'),
  httpIdleTimeoutMs: limit('idleTimeoutMs', 'the idle timeout', 'ms'),
  httpMaxHeaderBytes: limit('maxHeaderBytes', 'the header size limit', 'bytes'),
  httpMaxConnections: limit('maxConnections', 'the connection limit', 'connections'),
  httpMaxBodyBytes: limit('maxBodyBytes', 'the body size limit', 'bytes'),
  eventsFollowMax: limit('followMax', 'the follow stream limit', 'streams'),
  eventsFollowMaxMs: limit('followMaxMs', 'the follow stream duration', 'ms'),
  eventsFollowStallMs: limit('followStallMs', 'the follow stall limit', 'ms'),
}).superRefine((c, ctx) => {
  if (!!c.etcdCert !== !!c.etcdKey) {
    ctx.addIssue({ code: 'custom', path: [c.etcdCert ? 'etcdKey' : 'etcdCert'], message: 'an etcd client certificate needs both --etcd-cert and --etcd-key' });
  }
  if (!!c.etcdUser !== !!c.etcdPasswordFile) {
    ctx.addIssue({ code: 'custom', path: [c.etcdUser ? 'etcdPasswordFile' : 'etcdUser'], message: 'etcd authentication needs both --etcd-user and --etcd-password-file' });
  }
  if (!!c.tlsCert !== !!c.tlsKey) {
    ctx.addIssue({ code: 'custom', path: [c.tlsCert ? 'tlsKey' : 'tlsCert'], message: 'HTTPS needs both --tls-cert and --tls-key (or neither, for plain HTTP)' });
  }
  if (c.httpHeadersTimeoutMs > c.httpRequestTimeoutMs) {
    ctx.addIssue({ code: 'custom', path: ['httpHeadersTimeoutMs'], message: `the headers timeout (${c.httpHeadersTimeoutMs} ms) cannot be longer than the request timeout (${c.httpRequestTimeoutMs} ms)` });
  }
});
export type ControllerConfig = z.infer<typeof ControllerConfig>;
export type ControllerConfigInput = z.input<typeof ControllerConfig>;
