import { Agent, AgentConfig } from '@underlay/node-agent';
import { openLinkOps, startTracing } from '@underlay/adapters';
import type { ResolvedFlags } from '../flags.js';
import { agentFlags } from '../specs/agent.js';

export { agentFlags };
import { runService, serviceLog, withTracing } from './run.js';

export function agentCommand(p: ResolvedFlags): Promise<number> {
  return runService(p, agentFlags, AgentConfig, (cfg, logSettings) => {
    const logger = serviceLog(logSettings, 'underlay-agent', `agent ${cfg.node}`, cfg.node);
    // Traces, when the OTEL_* variables configure an exporter (off otherwise).
    const tracing = startTracing({ service: 'underlay-agent', instance: cfg.node, logger });
    return { service: withTracing(new Agent(cfg, () => openLinkOps(), logger), tracing), logger };
  });
}
