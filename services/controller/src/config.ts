import { z } from 'zod';

const url = (what: string) =>
  z.string().regex(/^[a-z][a-z0-9+.-]*:\/\/[^\s,]+$/i, `${what} must be a URL such as http://127.0.0.1:2379`);
const ms = (what: string) => z.coerce.number().int(`${what} must be a whole number of milliseconds`).positive(`${what} must be positive`);

export const ControllerConfig = z.object({
  etcd: z.array(url('each etcd endpoint')).min(1, 'at least one etcd endpoint is needed'),
  nats: z.string().min(1),
  /** HOST:PORT for the HTTP API. */
  listen: z.string().regex(/^[^\s:]*:\d{1,5}$/, 'listen must be HOST:PORT, for example 127.0.0.1:7410').default('127.0.0.1:7410'),
  /** Name used as this controller's identity (leader key value, logs). */
  name: z.string().min(1).default('controller'),
  /** Leader lease TTL: a standby takes over within about this long after the leader dies. */
  leaseTtlSeconds: z.coerce.number().int().min(1).max(60).default(2),
  /** Write a snapshot every this many events. */
  snapshotEvery: z.coerce.number().int().positive().default(10_000),
  /** Collector pass interval, and the leak and block rules' periods. */
  collectIntervalMs: ms('collect interval').default(30_000),
  unboundGraceMs: ms('unbound grace').default(60_000),
  reportSlackMs: ms('report slack').default(10_000),
  nodeExpiredMs: ms('node expiry').default(3_600_000),
  blockGraceMs: ms('block grace').default(300_000),
  /** A node that sent no report for this long is NotReady (agents may ask for their own lease). */
  nodeLeaseMs: ms('node lease').default(15_000),
  /** Bearer token the HTTP API requires on /v1 (or read from apiTokenFile). */
  apiToken: z.string().min(16, 'the API token must be at least 16 characters').optional(),
  apiTokenFile: z.string().min(1).optional(),
});
export type ControllerConfig = z.infer<typeof ControllerConfig>;
export type ControllerConfigInput = z.input<typeof ControllerConfig>;
