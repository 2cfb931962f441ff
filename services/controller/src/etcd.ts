/**
 * The controller's etcd client options from its configuration: endpoints, deadline, TLS files
 * (`--etcd-ca`, `--etcd-cert`, `--etcd-key`) and the user (`--etcd-user`, `--etcd-password-file`).
 * The password file must not be open to group or others (refused with the chmod to run). Only
 * controllers hold these: agents have no etcd code and no etcd credentials.
 */
import * as fs from 'node:fs';
import { InvalidArgumentError } from '@underlay/core';
import { readPrivateFile, type EtcdClientOptions } from '@underlay/adapters';
import type { ControllerConfig } from './config.js';

type EtcdConfig = Pick<ControllerConfig, 'etcd' | 'etcdTimeoutMs' | 'etcdCa' | 'etcdCert' | 'etcdKey' | 'etcdUser' | 'etcdPasswordFile'>;

function readFile(path: string, flag: string): Buffer {
  try {
    return fs.readFileSync(path);
  } catch (e) {
    throw new InvalidArgumentError(`${flag} ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
}

/** Reads the password file, refusing one that group or others may access. */
export function readEtcdPassword(path: string): string {
  let text: string;
  try {
    text = readPrivateFile(path, 'a password file', 64 * 1024);
  } catch (e) {
    const why = e instanceof InvalidArgumentError ? e.message : `cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
    throw new InvalidArgumentError(`--etcd-password-file: ${why}`, { cause: e });
  }
  const pw = text.replace(/\r?\n$/, '');
  if (!pw) throw new InvalidArgumentError(`--etcd-password-file ${path} is empty`);
  return pw;
}

export function etcdClientOptions(c: EtcdConfig): EtcdClientOptions {
  const o: EtcdClientOptions = { endpoints: c.etcd, timeoutMs: c.etcdTimeoutMs };
  if (c.etcdCa || c.etcdCert || c.etcdKey) {
    o.tls = {
      ca: c.etcdCa ? readFile(c.etcdCa, '--etcd-ca') : undefined,
      cert: c.etcdCert ? readFile(c.etcdCert, '--etcd-cert') : undefined,
      key: c.etcdKey ? readFile(c.etcdKey, '--etcd-key') : undefined,
    };
  }
  if (c.etcdUser) {
    if (!c.etcdPasswordFile) throw new InvalidArgumentError('etcd authentication needs both --etcd-user and --etcd-password-file');
    o.auth = { username: c.etcdUser, password: readEtcdPassword(c.etcdPasswordFile) };
  }
  return o;
}
