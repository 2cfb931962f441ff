import { z } from 'zod';
import { NodeName } from '@underlay/core';

export const AgentConfig = z.object({
  node: NodeName,
  nats: z.string().min(1),
  docker: z.string().regex(/^unix:\/\/\/.+/, 'docker must be a unix:// URL such as unix:///var/run/docker.sock').default('unix:///var/run/docker.sock'),
  pluginDir: z.string().min(1).default('/run/docker/plugins'),
  stateDir: z.string().min(1).default('/var/lib/underlay'),
  /** How often the agent reports to the controller that it is alive and which endpoints it holds. */
  reportIntervalMs: z.coerce.number().int('report interval must be whole milliseconds').min(100, 'report interval must be at least 100 ms').default(10_000),
});
export type AgentConfig = z.infer<typeof AgentConfig>;
