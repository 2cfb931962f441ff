// An authenticated nats-server for tests: a key store (operator, account, signing key, system account) in a
// directory of its own, nats-server started with the configuration `underlay creds nats-config` prints, and
// functions that issue node and controller `.creds` files (written 0600), as `underlay creds node|controller` do.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { controllerCreds, initNatsKeys, natsServerConfig, nodeCreds, writePrivateFile, type NatsKeys } from '@underlay/adapters';
import { nodeToken } from '@underlay/core';
import { errors, type NatsConnection, type Subscription } from '@nats-io/transport-node';
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

// How nats.js reports the server's refusals, for tests that check them.
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Every async error the server sent this connection (permission violations arrive this way for publishes). */
export function asyncErrors(nc: NatsConnection): Error[] {
  const seen: Error[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') seen.push(s.error);
  })();
  return seen;
}

export type Violation = InstanceType<typeof errors.PermissionViolationError>;

/** The server's permission violation: as is (async errors, closed subscriptions) or as a failed request's cause. */
export function violationOf(e: unknown): Violation {
  const pv = e instanceof errors.RequestError ? e.cause : e;
  if (!(pv instanceof errors.PermissionViolationError)) throw new Error(`expected a permission violation, got ${String(e)}${e instanceof Error && e.cause ? ` (cause: ${String(e.cause)})` : ''}`);
  return pv;
}

export function expectViolation(e: unknown, operation: 'publish' | 'subscription', subject: string): void {
  const pv = violationOf(e);
  expect({ operation: pv.operation, subject: pv.subject }).toEqual({ operation, subject });
}

export async function requestError(nc: NatsConnection, subject: string, data = '{}'): Promise<unknown> {
  return nc.request(subject, enc.encode(data), { timeout: 5_000 }).then(
    (m) => new Error(`expected a refusal, got a reply: ${dec.decode(m.data)}`),
    (e: unknown) => e,
  );
}

/** The error a subscription was closed with (the server refused it), or a timeout error. */
export async function closedWith(sub: Subscription, ms = 5_000): Promise<unknown> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<Error>((r) => (t = setTimeout(() => r(new Error(`subscription ${sub.getSubject()} still open after ${ms} ms`)), ms)));
  try {
    return await Promise.race([sub.closed.then((e) => e ?? new Error('closed without an error')), timeout]);
  } finally {
    clearTimeout(t);
  }
}

