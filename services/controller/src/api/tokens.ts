/**
 * Named API tokens. A token file holds one `NAME TOKEN` per line (`#` comments and blank lines allowed);
 * a file holding a single bare token is that token named `api` (the format before names). The name of
 * the token a request carries is the actor of what it does (`user:<name>`). Token files are private:
 * they are written mode 0600 whatever the umask, and a file that group or others may read or write is
 * refused with the `chmod 600` that fixes it. Bearer tokens are checked against every token in constant
 * time (SHA-256 digests, timingSafeEqual, no early exit).
 *
 * Also used by the CLI for `--token-file` (it imports this module alone: no etcd or NATS code).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import { InvalidArgumentError } from '@underlay/core';
// The module itself, not the package's index: the CLI loads this file for its token checks without etcd or NATS code.
import { readPrivateFile, writePrivateFile } from '@underlay/adapters/dist/private-file.js';

export interface NamedToken {
  name: string;
  token: string;
}

/** A token's name: what events record as `user:<name>`. */
export const TOKEN_NAME = /^[A-Za-z0-9_.@-]{1,64}$/;
/** A token: 16 to 512 printable ASCII characters, no spaces. */
export const TOKEN_VALUE = /^[\x21-\x7e]{16,512}$/;
/** The name of `--api-token`, of a bare token in a file, and of the token made up when there is none. */
export const DEFAULT_TOKEN_NAME = 'api';
/** A token file larger than this is refused (it is not a token file). */
const MAX_FILE_BYTES = 1024 * 1024;
const MAX_TOKENS = 10_000;


/** Parses a token file's text; `file` names it in errors. An empty list when it holds no token. */
export function parseTokenFile(text: string, file: string): NamedToken[] {
  const entries: { line: number; fields: string[] }[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    entries.push({ line: i + 1, fields: line.split(/[ \t]+/) });
  });
  if (entries.length > MAX_TOKENS) throw new InvalidArgumentError(`${file}: more than ${MAX_TOKENS} tokens`);
  // The older format: the file is the token.
  if (entries.length === 1 && entries[0]!.fields.length === 1) {
    const token = entries[0]!.fields[0]!;
    if (!TOKEN_VALUE.test(token)) throw new InvalidArgumentError(`${file}: the token must be 16 to 512 printable characters without spaces`);
    return [{ name: DEFAULT_TOKEN_NAME, token }];
  }
  const out: NamedToken[] = [];
  const names = new Set<string>();
  const values = new Set<string>();
  for (const { line, fields } of entries) {
    if (fields.length !== 2) throw new InvalidArgumentError(`${file} line ${line}: expected "NAME TOKEN" (or a file holding one bare token)`);
    const [name, token] = fields as [string, string];
    if (!TOKEN_NAME.test(name)) throw new InvalidArgumentError(`${file} line ${line}: the name must be 1 to 64 letters, digits, '_', '.', '@' or '-'`);
    if (!TOKEN_VALUE.test(token)) throw new InvalidArgumentError(`${file} line ${line}: the token of ${name} must be 16 to 512 printable characters without spaces`);
    if (names.has(name)) throw new InvalidArgumentError(`${file} line ${line}: the name ${name} appears twice`);
    if (values.has(token)) throw new InvalidArgumentError(`${file} line ${line}: the token of ${name} is also another name's token`);
    names.add(name);
    values.add(token);
    out.push({ name, token });
  }
  return out;
}

/** Reads and parses a token file after checking it is private (on the opened file, so it cannot be swapped in between). */
export function readTokenFile(file: string): NamedToken[] {
  return parseTokenFile(readPrivateFile(file, 'a token file', MAX_FILE_BYTES), file);
}

/** The text of a token file. */
export function formatTokenFile(tokens: readonly NamedToken[]): string {
  return `# underlay API tokens: one "NAME TOKEN" per line; NAME is recorded as the actor (user:NAME) of what the token does\n${tokens.map((t) => `${t.name} ${t.token}\n`).join('')}`;
}

/**
 * Writes a token file, mode 0600 whatever the umask and whatever the mode of a file already there: the
 * mode is set on the open file before the tokens are written, then the data is flushed to disk.
 */
export function writeTokenFile(file: string, tokens: readonly NamedToken[]): void {
  writePrivateFile(file, formatTokenFile(tokens));
}

/** A new random token (32 characters, base64url). */
export const newToken = (): string => randomBytes(24).toString('base64url');

/**
 * The tokens of `file`; when it is missing or empty, a file holding one new token named `api` is
 * written first (what `underlay up` and `--api-token-file` rely on). `made` says whether it was.
 */
export function ensureTokenFile(file: string): { tokens: NamedToken[]; made: boolean } {
  let found: NamedToken[] | undefined;
  try {
    found = readTokenFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw tokenFileError(e, file);
  }
  if (found?.length) return { tokens: found, made: false };
  if (found && fs.readFileSync(file, 'utf8').trim() !== '') throw new InvalidArgumentError(`${file} holds no token; add a line "NAME TOKEN"`);
  const tokens = [{ name: DEFAULT_TOKEN_NAME, token: newToken() }];
  writeTokenFile(file, tokens);
  return { tokens, made: true };
}

/** A file-system failure as a one-line message naming the file; our own errors as they are. */
export function tokenFileError(e: unknown, file: string): Error {
  if (e instanceof InvalidArgumentError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ELOOP') return new InvalidArgumentError(`${file} is a symbolic link; give the token file itself`, { cause: e });
  return new InvalidArgumentError(`cannot read ${file}: ${code ?? (e as Error).message}`, { cause: e });
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** The tokens a controller accepts, checked in constant time. */
export class ApiTokens {
  private readonly digests: { name: string; digest: Buffer }[];

  constructor(readonly tokens: readonly NamedToken[]) {
    if (tokens.length === 0) throw new InvalidArgumentError('no API token');
    this.digests = tokens.map((t) => ({ name: t.name, digest: digest(t.token) }));
  }

  /** The names, in file order. */
  get names(): string[] {
    return this.tokens.map((t) => t.name);
  }

  /**
   * The name of the token `presented` is, or undefined. Every token is compared (no early exit), by
   * digests of equal length, so the time taken says nothing about which token matched or how close it was.
   */
  nameOf(presented: string): string | undefined {
    const d = digest(presented);
    let found: string | undefined;
    for (const t of this.digests) {
      if (timingSafeEqual(d, t.digest) && found === undefined) found = t.name;
    }
    return found;
  }
}

/** What resolveApiToken needs from the controller's config. */
export interface TokenConfig {
  apiToken?: string;
  apiTokenFile?: string;
}

/**
 * The controller's API tokens: `--api-token` (named `api`; it wins over a file), or the tokens of
 * `--api-token-file` (made, mode 0600, with one random token named `api` when missing or empty), or
 * neither: one token made up for this run (and every /v1 request refused in practice).
 */
export function resolveApiToken(c: TokenConfig, logger: (msg: string) => void): ApiTokens {
  if (c.apiToken) {
    if (c.apiTokenFile) logger(`--api-token given: ignoring --api-token-file ${c.apiTokenFile}`);
    return new ApiTokens([{ name: DEFAULT_TOKEN_NAME, token: c.apiToken }]);
  }
  if (c.apiTokenFile) {
    const { tokens, made } = ensureTokenFile(c.apiTokenFile);
    if (made) logger(`API token written to ${c.apiTokenFile} (mode 0600, name ${DEFAULT_TOKEN_NAME})`);
    else logger(`API tokens from ${c.apiTokenFile}: ${tokens.map((t) => t.name).join(', ')}`);
    return new ApiTokens(tokens);
  }
  logger('no --api-token or --api-token-file: made up a token for this run; the HTTP API will refuse every /v1 request without it');
  return new ApiTokens([{ name: DEFAULT_TOKEN_NAME, token: newToken() }]);
}
