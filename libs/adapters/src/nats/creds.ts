/**
 * NATS identities (decentralized authentication): one operator, one account for underlay (JetStream enabled in its
 * limits, users signed by the account's signing key), one system account for the server's resolver, and the
 * user credentials handed to nodes and controllers.
 *
 * The key store lives in `<state-dir>/nats/`: the folder is 0700 and every file 0600, set with an explicit chmod so
 * the umask does not matter. Files: `operator.nk`, `account.nk`, `account-signing.nk`, `system.nk` (nkey seeds) and
 * `operator.jwt`, `account.jwt`, `system.jwt` (the signed claims the nats-server configuration preloads).
 *
 * Users are not registered anywhere: a user JWT signed by the account's signing key is valid as soon as it is
 * issued, so `nodeCreds` for a new node needs nothing on a running server (a MEMORY resolver preloaded with the two
 * account JWTs is enough). A node's user may publish only its own request subjects and read only its own consumer
 * and inbox (see `nodePermissions`); controllers get `>`.
 *
 * Libraries: `@nats-io/jwt` 0.0.11 and `@nats-io/nkeys` 2.0.3 ship CommonJS builds (`main: lib/mod.js`, no
 * `"type": "module"`), so they load with a plain `import` under `module: nodenext` in this CommonJS package; no
 * dynamic import is needed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { encodeAccount, encodeOperator, encodeUser, fmtCreds, decode, type Account, type Permissions } from '@nats-io/jwt';
import { createAccount, createOperator, createUser, fromSeed, type KeyPair } from '@nats-io/nkeys';
import { ensurePrivateDir, replacePrivateFile } from '../private-file.js';
import { NodeName, UnderlayError, nodeConsumerApiSubjects, nodeEventSubjects, nodeInboxPrefix, rpcNodeSubjects, type ErrorCode } from '@underlay/core';

/** What is wrong with a key store, and the error code it becomes. */
const KEYS_ERROR_CODE = {
  /** No store yet. */
  missing: 'not-found',
  /** init would overwrite one. */
  exists: 'conflict',
  /** Files missing or not matching. */
  damaged: 'internal',
  /** A bad user name. */
  name: 'invalid-argument',
} as const satisfies Record<string, ErrorCode>;

/** A key store problem, with the text a user sees (and usually the command that fixes it). */
export class NatsKeysError extends UnderlayError {
  /** missing: no store yet; exists: init would overwrite; damaged: files missing or not matching; name: a bad user name. */
  readonly reason: keyof typeof KEYS_ERROR_CODE;
  constructor(reason: NatsKeysError['reason'], message: string, opts: { cause?: unknown } = {}) {
    super(KEYS_ERROR_CODE[reason], message, opts);
    this.name = 'NatsKeysError';
    this.reason = reason;
  }
}

export const NATS_ACCOUNT_NAME = 'UNDERLAY';
export const NATS_SYSTEM_ACCOUNT_NAME = 'SYS';
export const NATS_OPERATOR_NAME = 'underlay';

/** The key store folder under a state directory. */
export const natsKeyDir = (stateDir: string): string => path.join(stateDir, 'nats');

const FILES = {
  operatorSeed: 'operator.nk',
  accountSeed: 'account.nk',
  signingSeed: 'account-signing.nk',
  systemSeed: 'system.nk',
  operatorJwt: 'operator.jwt',
  accountJwt: 'account.jwt',
  systemJwt: 'system.jwt',
} as const;
type FileKey = keyof typeof FILES;

// nkey seeds are base32: 'S' + the key type's letter + 56 more characters.
const seed = (prefix: string) => z.string().trim().regex(new RegExp(`^S${prefix}[A-Z2-7]{56}$`), `not an nkey seed of the expected kind (S${prefix}…)`);
const jwtText = z.string().trim().regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'not a JWT');
const FileSchemas: Record<FileKey, z.ZodType<string>> = {
  operatorSeed: seed('O'),
  accountSeed: seed('A'),
  signingSeed: seed('A'),
  systemSeed: seed('A'),
  operatorJwt: jwtText,
  accountJwt: jwtText,
  systemJwt: jwtText,
};

/** A controller's (or any non-node user's) name in its credentials. */
export const CredsUserName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a controller name is 1-63 letters, digits, "_", "." or "-"');

export interface NatsKeys {
  dir: string;
  operator: KeyPair;
  account: KeyPair;
  /** Signs every user JWT (the account key itself signs nothing but could re-sign the account). */
  signing: KeyPair;
  system: KeyPair;
  operatorJwt: string;
  accountJwt: string;
  systemJwt: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();


const initHint = (stateDir: string) => `underlay creds init --state-dir ${stateDir}`;

/** Which key store files exist (none, all, or some: a damaged store). */
function presentFiles(dir: string): FileKey[] {
  return (Object.keys(FILES) as FileKey[]).filter((k) => fs.existsSync(path.join(dir, FILES[k])));
}

/** True when any key store file exists under `stateDir` (it may still be incomplete; `loadNatsKeys` checks). */
export function natsKeysExist(stateDir: string): boolean {
  return presentFiles(natsKeyDir(stateDir)).length > 0;
}

/** Every NATS limit explicit, -1 = no limit (as nsc makes them): a field left out would decode as 0 in nats-server. */
const NO_NATS_LIMITS = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };

/**
 * Creates the operator, the underlay account (JetStream on, no storage limit of its own: the server's and the
 * stream's limits apply), its signing key and the system account, and writes them under `<stateDir>/nats/`.
 * Refuses when any key file exists unless `force` (which replaces all of them: every credential issued before
 * stops working once nats-server runs with the new configuration).
 */
export async function initNatsKeys(stateDir: string, opts: { force?: boolean } = {}): Promise<NatsKeys> {
  const dir = natsKeyDir(stateDir);
  const present = fs.existsSync(dir) ? presentFiles(dir) : [];
  if (present.length && !opts.force) {
    throw new NatsKeysError(
      'exists',
      `NATS keys already exist in ${dir} (${present.map((k) => FILES[k]).join(', ')}); ` +
        `add --force to replace them (every credential issued with them then stops working)`,
    );
  }
  ensurePrivateDir(dir);
  const operator = createOperator();
  const account = createAccount();
  const signing = createAccount();
  const system = createAccount();
  const systemPub = system.getPublicKey();
  const operatorJwt = await encodeOperator(NATS_OPERATOR_NAME, operator, { system_account: systemPub });
  const accountClaims: Partial<Account> = {
    limits: { ...NO_NATS_LIMITS, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 },
    signing_keys: [signing.getPublicKey()],
  };
  const accountJwt = await encodeAccount(NATS_ACCOUNT_NAME, account, accountClaims, { signer: operator });
  const systemJwt = await encodeAccount(NATS_SYSTEM_ACCOUNT_NAME, system, { limits: { ...NO_NATS_LIMITS } }, { signer: operator });
  const texts: Record<FileKey, string> = {
    operatorSeed: dec.decode(operator.getSeed()),
    accountSeed: dec.decode(account.getSeed()),
    signingSeed: dec.decode(signing.getSeed()),
    systemSeed: dec.decode(system.getSeed()),
    operatorJwt,
    accountJwt,
    systemJwt,
  };
  // JWTs first, seeds last: a crash in between leaves a store that loadNatsKeys calls damaged, never one that
  // silently mixes old and new keys.
  for (const k of ['operatorJwt', 'accountJwt', 'systemJwt', 'operatorSeed', 'accountSeed', 'signingSeed', 'systemSeed'] as FileKey[]) {
    replacePrivateFile(path.join(dir, FILES[k]), `${texts[k]}\n`);
  }
  return loadNatsKeys(stateDir);
}

/** Reads and checks the key store; a missing or inconsistent store is a NatsKeysError that says what to run. */
export function loadNatsKeys(stateDir: string): NatsKeys {
  const dir = natsKeyDir(stateDir);
  const present = fs.existsSync(dir) ? presentFiles(dir) : [];
  if (!present.length) {
    throw new NatsKeysError('missing', `no NATS keys in ${dir}; run \`${initHint(stateDir)}\` first`);
  }
  const missing = (Object.keys(FILES) as FileKey[]).filter((k) => !present.includes(k));
  if (missing.length) {
    throw new NatsKeysError(
      'damaged',
      `the NATS key store in ${dir} is incomplete (missing ${missing.map((k) => FILES[k]).join(', ')}); ` +
        `run \`${initHint(stateDir)} --force\` to make new keys`,
    );
  }
  const text = {} as Record<FileKey, string>;
  for (const k of Object.keys(FILES) as FileKey[]) {
    const file = path.join(dir, FILES[k]);
    const r = FileSchemas[k].safeParse(fs.readFileSync(file, 'utf8'));
    if (!r.success) throw new NatsKeysError('damaged', `${file}: ${r.error.issues[0]?.message ?? 'unreadable'}`);
    text[k] = r.data;
  }
  const operator = fromSeed(enc.encode(text.operatorSeed));
  const account = fromSeed(enc.encode(text.accountSeed));
  const signing = fromSeed(enc.encode(text.signingSeed));
  const system = fromSeed(enc.encode(text.systemSeed));
  // The JWTs must be the ones these seeds signed (and name these accounts), or the server config would not match.
  const check = (file: string, jwt: string, sub: string, iss: string) => {
    let c: { sub: string; iss: string };
    try {
      c = decode(jwt);
    } catch (e) {
      throw new NatsKeysError('damaged', `${path.join(dir, file)}: ${(e as Error).message}`, { cause: e });
    }
    if (c.sub !== sub || c.iss !== iss) {
      throw new NatsKeysError('damaged', `${path.join(dir, file)} does not belong to the keys in ${dir}; run \`${initHint(stateDir)} --force\``);
    }
  };
  check(FILES.operatorJwt, text.operatorJwt, operator.getPublicKey(), operator.getPublicKey());
  check(FILES.accountJwt, text.accountJwt, account.getPublicKey(), operator.getPublicKey());
  check(FILES.systemJwt, text.systemJwt, system.getPublicKey(), operator.getPublicKey());
  return { dir, operator, account, signing, system, operatorJwt: text.operatorJwt, accountJwt: text.accountJwt, systemJwt: text.systemJwt };
}

/** The key store under `stateDir`, made when there is none (`underlay up`). A damaged store is an error. */
export async function ensureNatsKeys(stateDir: string): Promise<{ keys: NatsKeys; created: boolean }> {
  const dir = natsKeyDir(stateDir);
  if (!fs.existsSync(dir) || presentFiles(dir).length === 0) return { keys: await initNatsKeys(stateDir), created: true };
  ensurePrivateDir(dir);
  return { keys: loadNatsKeys(stateDir), created: false };
}

/**
 * What a node's user may do, and nothing else: publish its own requests, read its own JetStream consumer
 * (info and pull; the controller creates it: agents before interest-based delivery), receive on its own inbox prefix,
 * and subscribe to the event chains it may follow (the cluster's, its host's and the pools').
 */
export function nodePermissions(node: string): Required<Pick<Permissions, 'pub' | 'sub'>> {
  return {
    pub: { allow: [rpcNodeSubjects(node), ...nodeConsumerApiSubjects(node)] },
    sub: { allow: [`${nodeInboxPrefix(node)}.>`, ...nodeEventSubjects(node)] },
  };
}

/** Controllers are the cluster's writers: they serve every node's requests, publish events and manage the stream. */
export function controllerPermissions(): Required<Pick<Permissions, 'pub' | 'sub'>> {
  return { pub: { allow: ['>'] }, sub: { allow: ['>'] } };
}

async function userCreds(keys: NatsKeys, name: string, perms: Permissions): Promise<string> {
  const user = createUser();
  const jwt = await encodeUser(name, user, keys.account, perms, { signer: keys.signing });
  return dec.decode(fmtCreds(jwt, user));
}

/** A standard `.creds` file (user JWT and seed) for node `node`. */
export async function nodeCreds(keys: NatsKeys, node: string): Promise<string> {
  const r = NodeName.safeParse(node);
  if (!r.success) throw new NatsKeysError('name', `node name ${JSON.stringify(node)}: ${r.error.issues[0]?.message}`);
  return userCreds(keys, `node:${node}`, nodePermissions(node));
}

/** A standard `.creds` file for controller `name` (pub and sub `>`). */
export async function controllerCreds(keys: NatsKeys, name: string): Promise<string> {
  const r = CredsUserName.safeParse(name);
  if (!r.success) throw new NatsKeysError('name', `controller name ${JSON.stringify(name)}: ${r.error.issues[0]?.message}`);
  return userCreds(keys, `controller:${name}`, controllerPermissions());
}

/**
 * The nats-server configuration for these keys: trusted operator, system account, a MEMORY resolver preloaded with
 * the underlay and system account JWTs. New users (nodes) need no change here: the account JWT names the signing
 * key that signs them. Include it in (or append it to) a configuration that sets listen, JetStream, TLS.
 */
export function natsServerConfig(keys: NatsKeys): string {
  return [
    '# NATS decentralized authentication for underlay (`underlay creds nats-config`).',
    `# Operator ${NATS_OPERATOR_NAME}, account ${NATS_ACCOUNT_NAME} (users signed by its signing key), system account ${NATS_SYSTEM_ACCOUNT_NAME}.`,
    `operator: "${keys.operatorJwt}"`,
    `system_account: ${keys.system.getPublicKey()}`,
    'resolver: MEMORY',
    'resolver_preload: {',
    `  # ${NATS_ACCOUNT_NAME}`,
    `  ${keys.account.getPublicKey()}: "${keys.accountJwt}"`,
    `  # ${NATS_SYSTEM_ACCOUNT_NAME}`,
    `  ${keys.system.getPublicKey()}: "${keys.systemJwt}"`,
    '}',
    '',
  ].join('\n');
}
