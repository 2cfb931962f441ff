/** `underlay up`'s flags (the embedded single-host stack), without its code. */
import type { FlagSpec } from '../flags.js';
import { agentFlags } from './agent.js';
import { logFlags } from './log.js';

export const upFlags: FlagSpec[] = [
  { key: 'stateDir', flag: 'state-dir', value: 'DIR', help: 'data of etcd, NATS and the agent', default: '/var/lib/underlay' },
  { key: 'node', flag: 'node', value: 'NAME', help: 'node name (default: this host\'s name)' },
  { key: 'etcdPort', flag: 'etcd-port', value: 'PORT', help: 'etcd client port on 127.0.0.1 (the peer port is the next one)', default: 12379 },
  { key: 'natsPort', flag: 'nats-port', value: 'PORT', help: 'NATS port on 127.0.0.1', default: 14222 },
  { key: 'listen', flag: 'listen', value: 'HOST:PORT', help: 'controller HTTP API', default: '127.0.0.1:7410' },
  { key: 'natsAuth', flag: 'nats-auth', boolean: true, help: 'NATS users and permissions, keys in --state-dir/nats (--no-nats-auth or --nats-auth=false: none)', default: true },
  ...agentFlags.filter((f) => f.key === 'pluginDir' || f.key === 'docker'),
  ...logFlags,
];
