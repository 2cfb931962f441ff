/**
 * Files that hold secrets (NATS keys and credentials, API token files, the etcd password): written 0600 whatever the
 * umask and whatever mode a file already there had (the mode is set on the open file before anything is written,
 * then the data is flushed to disk), and read only when private: opened without following a link, checked on the
 * open descriptor (no window between the check and the read), refused when group or others have any access.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError } from '@underlay/core';

export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
}

export function writePrivateFile(file: string, text: string | Uint8Array): void {
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o600);
  try {
    fs.fchmodSync(fd, 0o600);
    fs.writeSync(fd, typeof text === 'string' ? Buffer.from(text, 'utf8') : text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsync of a directory, so a rename or an unlink in it is durable. */
export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Replaces `file` with `text` (0600): all of it or, after a crash, the previous content, never a mix. Written under
 * a temporary name (`<file>.tmp-…`, which a reader of the folder may remove when it finds one), fsynced, renamed
 * over the file, and the folder fsynced so the rename survives a power cut too.
 */
export function replacePrivateFile(file: string, text: string | Uint8Array): void {
  const tmp = `${file}${TMP_MARK}${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  try {
    writePrivateFile(tmp, text);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  syncDir(path.dirname(file));
}

/** What the temporary files of replacePrivateFile have in their names. */
export const TMP_MARK = '.tmp-';

/** Refuses a file group or others may access, saying what to run; `kind` names it ("a token file"). */
export function checkPrivate(st: fs.Stats, file: string, kind: string): void {
  if (!st.isFile()) throw new InvalidArgumentError(`${file} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    throw new InvalidArgumentError(`${file} may be read or written by group or others (mode ${mode}); ${kind} must be private: chmod 600 ${file}`);
  }
}

/**
 * The text of a private file (see checkPrivate), at most `maxBytes`. Errors from the file system (ENOENT…) are
 * thrown as they are, so callers can tell a missing file from a refused one.
 */
export function readPrivateFile(file: string, kind: string, maxBytes = 1024 * 1024): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const st = fs.fstatSync(fd);
    checkPrivate(st, file, kind);
    if (st.size > maxBytes) throw new InvalidArgumentError(`${file} is larger than ${maxBytes} bytes; it is not ${kind}`);
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}
