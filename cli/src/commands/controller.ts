import { Controller, ControllerConfig } from '@underlay/controller';
import type { FlagSpec } from '../flags.js';
import { log, runService } from './run.js';

export const controllerFlags: FlagSpec[] = [
  { key: 'etcd', flag: 'etcd', list: true, help: 'etcd endpoints, comma-separated (http://127.0.0.1:2379)' },
  { key: 'nats', flag: 'nats', help: 'NATS URL (nats://127.0.0.1:4222)' },
  { key: 'listen', flag: 'listen', help: 'HTTP API address HOST:PORT (127.0.0.1:7410)' },
  { key: 'name', flag: 'name', help: 'this controller\'s name, unique per controller (controller)' },
  { key: 'leaseTtlSeconds', flag: 'lease-ttl', help: 'leader lease TTL in seconds; failover takes about this long (2)' },
  { key: 'snapshotEvery', flag: 'snapshot-every', help: 'write a state snapshot every N events (10000)' },
  { key: 'collectIntervalMs', flag: 'collect-interval-ms', help: 'leak and empty-block collection interval (30000)' },
  { key: 'unboundGraceMs', flag: 'unbound-grace-ms', help: 'an address never bound to an endpoint this long is a leak (60000)' },
  { key: 'nodeExpiredMs', flag: 'node-expired-ms', help: 'addresses of a node unseen this long are reclaimed (3600000)' },
  { key: 'blockGraceMs', flag: 'block-grace-ms', help: 'an empty block goes back to the pool after this long (300000)' },
  { key: 'nodeLeaseMs', flag: 'node-lease-ms', help: 'a node that sent no report this long is NotReady (15000)' },
  { key: 'apiToken', flag: 'api-token', value: 'TOKEN', help: 'bearer token the HTTP API requires on /v1 (16+ characters; prefer --api-token-file)' },
  { key: 'apiTokenFile', flag: 'api-token-file', value: 'FILE', help: 'file holding the API token; made (mode 0600) with a random token if missing' },
];

export function controllerCommand(argv: string[]): Promise<number> {
  return runService(argv, controllerFlags, ControllerConfig, (cfg) => {
    const logger = log(`controller ${cfg.name}`);
    return { service: new Controller(cfg, logger), logger };
  });
}
