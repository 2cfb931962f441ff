import { Agent, AgentConfig } from '@underlay/node-agent';
import { openLinkOps } from '@underlay/adapters';
import type { FlagSpec } from '../flags.js';
import { log, runService } from './run.js';

export const agentFlags: FlagSpec[] = [
  { key: 'node', flag: 'node', help: 'this host\'s node name (required)' },
  { key: 'nats', flag: 'nats', help: 'NATS URL (required)' },
  { key: 'docker', flag: 'docker', help: 'Docker Engine socket (unix:///var/run/docker.sock)' },
  { key: 'pluginDir', flag: 'plugin-dir', help: 'where Docker looks for plugin sockets (/run/docker/plugins)' },
  { key: 'stateDir', flag: 'state-dir', help: 'local state (/var/lib/underlay)' },
  { key: 'reportIntervalMs', flag: 'report-interval-ms', help: 'how often to report liveness and endpoints (10000)' },
];

export function agentCommand(argv: string[]): Promise<number> {
  return runService(argv, agentFlags, AgentConfig, (cfg) => {
    const logger = log(`agent ${cfg.node}`);
    return { service: new Agent(cfg, () => openLinkOps(), logger), logger };
  });
}
