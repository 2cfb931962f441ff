import { z } from 'zod';

const url = (what: string) =>
  z.string().regex(/^[a-z][a-z0-9+.-]*:\/\/[^\s,]+$/i, `${what} must be a URL such as http://127.0.0.1:2379`);

export const ControllerConfig = z.object({
  etcd: z.array(url('each etcd endpoint')).min(1, 'at least one etcd endpoint is needed'),
  nats: z.string().min(1),
  /** HOST:PORT for the HTTP API. */
  listen: z.string().regex(/^[^\s:]*:\d{1,5}$/, 'listen must be HOST:PORT, for example 127.0.0.1:7410').default('127.0.0.1:7410'),
  /** Name used as this controller's identity (leader election, logs). */
  name: z.string().min(1).default('controller'),
});
export type ControllerConfig = z.infer<typeof ControllerConfig>;
