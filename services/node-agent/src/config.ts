import { z } from 'zod';
import { NodeName } from '@underlay/core';

export const AgentConfig = z.object({
  node: NodeName,
  nats: z.string().min(1),
  docker: z.string().regex(/^unix:\/\/\/.+/, 'docker must be a unix:// URL such as unix:///var/run/docker.sock').default('unix:///var/run/docker.sock'),
  pluginDir: z.string().min(1).default('/run/docker/plugins'),
  stateDir: z.string().min(1).default('/var/lib/underlay'),
});
export type AgentConfig = z.infer<typeof AgentConfig>;
