/**
 * `underlay creds`: NATS identities for decentralized authentication (libs/adapters/src/nats/creds.ts).
 *
 *   underlay creds init [--force]             operator, account, account signing key, system account
 *   underlay creds node NAME [--out FILE]     a node's .creds file (its own subjects, inbox and consumer only)
 *   underlay creds controller NAME [--out FILE]  a controller's .creds file (pub/sub >)
 *   underlay creds nats-config [--out FILE]   the nats-server configuration (operator, system account, resolver)
 *
 * Keys live in `<--state-dir>/nats/` (folder 0700, files 0600). Exit codes: 0 done, 1 error (no keys yet, keys
 * exist, a file that cannot be written), 2 usage (unknown subcommand, missing or bad NAME, bad flag).
 */
import * as fs from 'node:fs';
import { z } from 'zod';
import { UnderlayError } from '@underlay/core';
import {
  NatsKeysError,
  controllerCreds,
  initNatsKeys,
  loadNatsKeys,
  natsServerConfig,
  nodeCreds,
  writePrivateFile,
  type NatsKeys,
} from '@underlay/adapters';
import { validate, UsageError, type ResolvedFlags } from '../flags.js';
import { credsFlags } from '../specs/creds.js';

export { credsFlags };

const CredsArgs = z.object({
  stateDir: z.string().min(1).default('/var/lib/underlay'),
  out: z.string().min(1).optional(),
  force: z.boolean().default(false),
});

/** A file `--out` names cannot be written (exit code 1); `cause` is the file system's error. */
export class CredsFailure extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('invalid-argument', message, opts);
    this.name = 'CredsFailure';
  }
}

function emit(text: string, out: string | undefined, secret: boolean): void {
  if (!out) {
    process.stdout.write(text);
    return;
  }
  try {
    if (secret) {
      writePrivateFile(out, text);
    } else {
      fs.writeFileSync(out, text, { mode: 0o644 });
      fs.chmodSync(out, 0o644);
    }
  } catch (e) {
    throw new CredsFailure(`cannot write ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
}

async function run(sub: string, p: ResolvedFlags): Promise<number> {
  const [name, ...extra] = p.rest;
  const a = validate(CredsArgs, p.values, credsFlags);
  const takesName = sub === 'node' || sub === 'controller';
  if (takesName && !name) throw new UsageError(`creds ${sub} needs a NAME: underlay creds ${sub} NAME [--out FILE]`);
  if (extra.length || (!takesName && name)) throw new UsageError(`unexpected argument ${JSON.stringify(takesName ? extra[0] : name)}; underlay creds ${sub} --help`);

  if (sub === 'init') {
    const keys = await initNatsKeys(a.stateDir, { force: a.force });
    process.stdout.write(
      [
        `NATS keys written to ${keys.dir} (mode 0600):`,
        `  operator ${keys.operator.getPublicKey()}`,
        `  account ${keys.account.getPublicKey()} (users signed by ${keys.signing.getPublicKey()})`,
        `  system account ${keys.system.getPublicKey()}`,
        'Next:',
        `  underlay creds nats-config --state-dir ${a.stateDir} --out /etc/nats/underlay-auth.conf   (include it in nats-server's configuration)`,
        `  underlay creds controller NAME --state-dir ${a.stateDir} --out FILE; underlay creds node NAME --state-dir ${a.stateDir} --out FILE`,
        '',
      ].join('\n'),
    );
    return 0;
  }
  const keys: NatsKeys = loadNatsKeys(a.stateDir);
  if (sub === 'nats-config') emit(natsServerConfig(keys), a.out, false);
  else emit(await (sub === 'node' ? nodeCreds(keys, name!) : controllerCreds(keys, name!)), a.out, true);
  if (a.out) process.stderr.write(`wrote ${a.out}${sub === 'nats-config' ? '' : ' (mode 0600)'}\n`);
  return 0;
}

export async function credsCommand(sub: string, p: ResolvedFlags): Promise<number> {
  try {
    return await run(sub, p);
  } catch (e) {
    if (e instanceof NatsKeysError && e.reason === 'name') throw new UsageError(e.message);
    if (e instanceof NatsKeysError || e instanceof CredsFailure) {
      process.stderr.write(`underlay creds: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
