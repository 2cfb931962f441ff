// An authenticated nats-server for tests: a key store (operator, account, signing key, system account) in a
// directory of its own, nats-server started with the configuration `underlay creds nats-config` prints, and
// functions that issue node and controller `.creds` files (written 0600), as `underlay creds node|controller` do.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { controllerCreds, initNatsKeys, natsServerConfig, nodeCreds, writePrivateFile, type NatsKeys } from '@underlay/adapters';
import { nodeToken } from '@underlay/core';
import { startNats, type NatsOptions, type NatsService } from './services';

export interface AuthNats {
  nats: NatsService;
  keys: NatsKeys;
  /** The state directory holding the key store (`<stateDir>/nats/`). */
  stateDir: string;
  /** Issues a node's credentials now (the server keeps running) and returns the .creds file's path. */
  nodeCredsFile(node: string): Promise<string>;
  /** Issues a controller's credentials (pub/sub `>`) and returns the .creds file's path. */
  controllerCredsFile(name?: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Makes a key store under `<dir>/keys` and starts nats-server (JetStream) with its configuration, plus `extraConfig`
 * (TLS, for example). Stop it with `stop()`; `dir` itself is the caller's to remove.
 */
export async function startAuthNats(opts: NatsOptions & { extraConfig?: string }): Promise<AuthNats> {
  const stateDir = path.join(opts.dir, 'keys');
  const keys = await initNatsKeys(stateDir);
  const credsDir = path.join(opts.dir, 'creds');
  fs.mkdirSync(credsDir, { recursive: true, mode: 0o700 });
  const { extraConfig, ...natsOpts } = opts;
  const nats = await startNats({ ...natsOpts, config: `${natsServerConfig(keys)}${extraConfig ?? ''}` });
  let n = 0;
  const write = (name: string, text: string) => {
    const file = path.join(credsDir, `${name}-${++n}.creds`);
    writePrivateFile(file, text);
    return file;
  };
  return {
    nats,
    keys,
    stateDir,
    nodeCredsFile: async (node) => write(`node-${nodeToken(node)}`, await nodeCreds(keys, node)),
    controllerCredsFile: async (name = 'controller') => write(`controller-${name}`, await controllerCreds(keys, name)),
    stop: () => nats.stop(),
  };
}
