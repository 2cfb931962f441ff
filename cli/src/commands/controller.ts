import { Controller, ControllerConfig } from '@underlay/controller';
import { parseFlags, validate, type FlagSpec } from '../flags.js';
import { log, untilSignal } from './run.js';

export const controllerFlags: FlagSpec[] = [
  { key: 'etcd', flag: 'etcd', list: true, help: 'etcd endpoints, comma-separated (http://127.0.0.1:2379)' },
  { key: 'nats', flag: 'nats', help: 'NATS URL (nats://127.0.0.1:4222)' },
  { key: 'listen', flag: 'listen', help: 'HTTP API address HOST:PORT (127.0.0.1:7410)' },
  { key: 'name', flag: 'name', help: 'this controller\'s name (controller)' },
];

export async function controllerCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, controllerFlags);
  const cfg = validate(ControllerConfig, values, controllerFlags);
  const logger = log('controller');
  const c = new Controller(cfg, logger);
  await c.start();
  await untilSignal(() => c.stop(), logger);
  return 0;
}
