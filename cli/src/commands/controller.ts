import { Controller, ControllerConfig } from '@underlay/controller';
import { startTracing } from '@underlay/adapters';
import type { ResolvedFlags } from '../flags.js';
import { controllerFlags } from '../specs/controller.js';

export { controllerFlags };
import { runService, serviceLog, withTracing } from './run.js';

export function controllerCommand(p: ResolvedFlags): Promise<number> {
  return runService(p, controllerFlags, ControllerConfig, (cfg, logSettings) => {
    const logger = serviceLog(logSettings, 'underlay-controller', `controller ${cfg.name}`, cfg.name);
    // Traces, when the OTEL_* variables configure an exporter (off otherwise).
    const tracing = startTracing({ service: 'underlay-controller', instance: cfg.name, logger, contextPropagation: 'explicit', exportThread: true });
    return { service: withTracing(new Controller(cfg, logger), tracing), logger };
  });
}
