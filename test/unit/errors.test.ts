// The one error model (libs/core/src/errors.ts): every error class derives from UnderlayError with a code from
// ERROR_CODES, the wire enums are made from that list, and the RPC client retries by code, never by message text.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errors as natsErrors, type Msg, type NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { ClientClosedError, GRPCDeadlineExceededError } from 'etcd3';
import {
  ApiErrorCode,
  ConflictError,
  ERROR_CODES,
  ErrorBodySchema,
  ExhaustedError,
  FoldError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  RETRIABLE_CODES,
  UnavailableError,
  UnderlayError,
  fromErrorBody,
  hasErrorCode,
  isRetriable,
  toErrorBody,
  type ErrorBody,
} from '@underlay/core';
import {
  CommitConflictError,
  DockerApiError,
  EtcdCalls,
  EventsTrimmedError,
  GobgpError,
  MemberSkippedError,
  GobgpTargetError,
  NatsConnectFileError,
  NatsKeysError,
  NetlinkError,
  RetryExhausted,
  RpcClient,
  SnapshotCorruptError,
  fromNatsRequestError,
} from '@underlay/adapters';
import { HttpError, toHttpError } from '../../services/controller/src/api/http';
import { ElectionStoppedError } from '../../services/controller/src/leader';
import { LinkError } from '../../services/node-agent/src/driver/links';
import { AnnounceGoneError, AnnounceTimeoutError } from '../../services/node-agent/src/driver/announce';
import { ClientError } from '../../cli/src/client';
import { CredsFailure } from '../../cli/src/commands/creds';
import { UsageError } from '../../cli/src/flags';
import { CommandLineError } from '../../cli/src/program';

const ROOT = path.resolve(__dirname, '../..');
const SOURCES = ['libs/core/src', 'libs/adapters/src', 'services/controller/src', 'services/node-agent/src', 'cli/src'];

const wrapped = new Error('the cause');
/** One instance of every error class in the sources (a new class fails the test until it is added here). */
const make: Record<string, () => Error> = {
  UnderlayError: () => new UnderlayError('internal', 'x'),
  InvalidArgumentError: () => new InvalidArgumentError('x', { cause: wrapped }),
  NotFoundError: () => new NotFoundError('x'),
  ConflictError: () => new ConflictError('x'),
  ExhaustedError: () => new ExhaustedError('x'),
  UnavailableError: () => new UnavailableError('x', { cause: wrapped }),
  PermissionDeniedError: () => new PermissionDeniedError('x'),
  RetryExhausted: () => new RetryExhausted(3, wrapped),
  CommitConflictError: () => new CommitConflictError(7),
  EventsTrimmedError: () => new EventsTrimmedError(10),
  SnapshotCorruptError: () => new SnapshotCorruptError(5, 'part 1 of 2 is missing', wrapped),
  NetlinkError: () => new NetlinkError({ errno: 'ENODEV', op: 'createMacvlan', message: 'no such device', cause: wrapped }),
  DockerApiError: () => new DockerApiError(500, 'Docker /networks: 500 boom'),
  NatsKeysError: () => new NatsKeysError('missing', 'no NATS keys'),
  NatsConnectFileError: () => new NatsConnectFileError('creds', '/nowhere', wrapped),
  GobgpTargetError: () => new GobgpTargetError('0.0.0.0:50051', 'not loopback'),
  GobgpError: () => new GobgpError('AddPath', 14, 'connection refused', wrapped),
  HttpError: () => new HttpError(404, 'not-found', 'no such path', undefined, {}, wrapped),
  ElectionStoppedError: () => new ElectionStoppedError(),
  AnnounceGoneError: () => new AnnounceGoneError('the endpoint left'),
  AnnounceTimeoutError: () => new AnnounceTimeoutError('waited 5000 ms for the link'),
  LinkError: () => new LinkError('failed to create the macvlan port: no such device', { cause: wrapped }),
  ClientError: () => new ClientError('cannot reach the controller', undefined, { code: 'unavailable', cause: wrapped }),
  CredsFailure: () => new CredsFailure('cannot write /x: EACCES', { cause: wrapped }),
  FoldError: () => new FoldError(3, 'no such pool'),
  UsageError: () => new UsageError('unknown flag --bogus'),
  MemberSkippedError: () => new MemberSkippedError('127.0.0.1:2379'),
  CommandLineError: () => new CommandLineError('unknown flag --bogus', 'network ls'),
};

function* sourceFiles(dir: string): Generator<string> {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* sourceFiles(p);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) yield p;
  }
}

/** Every `class X extends Y` in the sources whose chain looks like an error (Y is Error, ends in Error, or is one). */
function errorClasses(): Array<{ name: string; base: string; file: string }> {
  const all: Array<{ name: string; base: string; file: string }> = [];
  for (const src of SOURCES) {
    for (const file of sourceFiles(path.join(ROOT, src))) {
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/\bclass\s+(\w+)\s+extends\s+([\w.]+)/g)) all.push({ name: m[1]!, base: m[2]!, file: path.relative(ROOT, file) });
    }
  }
  const errorish = new Set(['Error']);
  for (let grew = true; grew; ) {
    grew = false;
    for (const c of all) {
      if (!errorish.has(c.name) && (errorish.has(c.base) || /Error$/.test(c.base))) {
        errorish.add(c.name);
        grew = true;
      }
    }
  }
  return all.filter((c) => errorish.has(c.name));
}

describe('one error model', () => {
  const classes = errorClasses();

  it('finds the error classes of every layer (the scan itself works)', () => {
    const names = classes.map((c) => c.name);
    for (const n of ['UnderlayError', 'FoldError', 'NetlinkError', 'DockerApiError', 'HttpError', 'LinkError', 'ClientError', 'CredsFailure', 'UsageError']) expect(names).toContain(n);
  });

  it('no error class extends Error except UnderlayError itself', () => {
    const plain = classes.filter((c) => c.base === 'Error' && c.name !== 'UnderlayError');
    expect(plain.map((c) => `${c.file}: ${c.name}`)).toEqual([]);
  });

  it('every error class is an UnderlayError with a code from ERROR_CODES, a text, retriable and its name', () => {
    const checked = classes;
    const missing = checked.filter((c) => !make[c.name]).map((c) => `${c.file}: ${c.name}`);
    expect(missing).toEqual([]);
    for (const c of checked) {
      const e = make[c.name]!();
      expect({ name: c.name, isUnderlay: e instanceof UnderlayError }).toEqual({ name: c.name, isUnderlay: true });
      const u = e as UnderlayError;
      expect(ERROR_CODES).toContain(u.code);
      expect(typeof u.retriable).toBe('boolean');
      expect(u.message.length).toBeGreaterThan(0);
      expect(u.name).toBe(c.name);
      // On the wire it keeps its code and text.
      expect(ErrorBodySchema.parse(toErrorBody(u))).toEqual({ code: u.code, message: u.message, retriable: u.retriable });
    }
  });

  it('chains the cause of what it wraps', () => {
    for (const name of ['InvalidArgumentError', 'UnavailableError', 'RetryExhausted', 'SnapshotCorruptError', 'NetlinkError', 'NatsConnectFileError', 'GobgpError', 'HttpError', 'LinkError', 'ClientError', 'CredsFailure']) {
      expect({ name, cause: make[name]!().cause }).toEqual({ name, cause: wrapped });
    }
    const kernel = new NetlinkError({ errno: 'EBUSY', op: 'createMacvlan', message: 'device or resource busy' });
    const link = new LinkError('failed to create the macvlan port: device or resource busy', { cause: kernel });
    expect([link.cause, link.retriable, link.code]).toEqual([kernel, true, 'internal']);
    const http = toHttpError(new EventsTrimmedError(3));
    expect([http.status, http.code, http.cause instanceof EventsTrimmedError]).toEqual([404, 'events-trimmed', true]);
  });

  it('turns etcd failures into unavailable by their class, with the failure as the cause', () => {
    const calls = new EtcdCalls(['http://127.0.0.1:2379'], 1000);
    const closed = new ClientClosedError('kv');
    const e = calls.translate(closed, 'get /underlay/v1/head');
    expect([e.constructor, e.message, e.cause]).toEqual([UnavailableError, 'etcd client for http://127.0.0.1:2379 is closed (get /underlay/v1/head)', closed]);
    const late = new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED');
    expect(calls.translate(late, 'txn')).toMatchObject({ code: 'unavailable', retriable: true, cause: late });
    const own = new ConflictError('x');
    expect(calls.translate(own, 'txn')).toBe(own);
  });

  it('keeps the texts users see', () => {
    expect(new EventsTrimmedError(42).message).toBe('events before seq 42 were trimmed; load the latest snapshot');
    expect(new CommitConflictError(7).message).toBe('event log moved past sequence 7: another writer committed; state is reloaded');
    expect(new ElectionStoppedError().message).toBe('leader election stopped');
    expect(new GobgpError('AddPath', 14, '').message).toBe('gobgpd AddPath: UNAVAILABLE');
    expect(new NatsConnectFileError('creds', '/x', Object.assign(new Error('gone'), { code: 'ENOENT' })).message).toBe('cannot read the NATS creds file /x: ENOENT');
  });

  it('decides retriable by code, unless the error says otherwise', () => {
    expect([...RETRIABLE_CODES].sort()).toEqual(['commit-conflict', 'unavailable']);
    expect(new UnderlayError('unavailable', 'x').retriable).toBe(true);
    expect(new UnderlayError('conflict', 'x').retriable).toBe(false);
    expect(new UnderlayError('conflict', 'x', { retriable: true }).retriable).toBe(true);
    expect(new CommitConflictError(1).retriable).toBe(true);
    expect(new GobgpError('AddPath', 14, '').retriable).toBe(true); // UNAVAILABLE
    expect(new GobgpError('AddPath', 3, '').retriable).toBe(false); // INVALID_ARGUMENT
    expect(isRetriable(new Error('timeout'))).toBe(false);
    expect(hasErrorCode(new EventsTrimmedError(1), 'events-trimmed')).toBe(true);
    expect(hasErrorCode(new NotFoundError('events before seq 1 were trimmed'), 'events-trimmed')).toBe(false);
  });

  it('the wire enums are the one list', () => {
    expect(ErrorBodySchema.shape.code.options).toEqual([...ERROR_CODES]);
    expect(ApiErrorCode.options).toEqual([...ERROR_CODES]);
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    for (const code of ERROR_CODES) expect(fromErrorBody(ErrorBodySchema.parse({ code, message: 'm', retriable: false })).code).toBe(code);
    expect(() => ErrorBodySchema.parse({ code: 'no-such-code', message: 'm', retriable: false })).toThrow();
  });
});

/** A NATS connection that answers each request with the next scripted reply (an error body, a result or a throw). */
class ScriptedNats {
  readonly subjects: string[] = [];
  constructor(private readonly script: Array<ErrorBody | { result: unknown } | Error>) {}
  async request(subject: string): Promise<Msg> {
    this.subjects.push(subject);
    const next = this.script.shift();
    if (next === undefined) throw new Error('the script ran out');
    if (next instanceof Error) throw next;
    const body = 'result' in next ? { ok: true, result: next.result } : { ok: false, error: next };
    return { json: () => body } as unknown as Msg;
  }
}

const Res = z.object({ n: z.number() });
const call = (nats: ScriptedNats, opts = {}) => new RpcClient(nats as unknown as NatsConnection, 'h1').call('nodeReport', { node: 'h1' }, Res, { deadlineMs: 5_000, ...opts });

describe('RpcClient retries by code', () => {
  it('retries a retriable code until the answer comes', async () => {
    const nats = new ScriptedNats([
      { code: 'unavailable', message: 'not the leader', retriable: true },
      { code: 'commit-conflict', message: 'event log moved past sequence 3', retriable: true },
      { result: { n: 1 } },
    ]);
    await expect(call(nats)).resolves.toEqual({ n: 1 });
    expect(nats.subjects).toHaveLength(3);
  });

  it('does not retry a final code, even when its text reads like a transient failure', async () => {
    const nats = new ScriptedNats([{ code: 'conflict', message: 'timeout: no responders (503)', retriable: false }, { result: { n: 1 } }]);
    await expect(call(nats)).rejects.toMatchObject({ code: 'conflict', message: 'timeout: no responders (503)' });
    expect(nats.subjects).toHaveLength(1);
  });

  it('decides on NATS failures by their class, not their text', async () => {
    const subject = 'underlay.rpc.v1.h1.node.report';
    const noResponders = new natsErrors.RequestError('no responders', { cause: new natsErrors.NoRespondersError(subject) });
    const nats = new ScriptedNats([noResponders, new natsErrors.TimeoutError(), { result: { n: 2 } }]);
    await expect(call(nats)).resolves.toEqual({ n: 2 });
    expect(nats.subjects).toHaveLength(3);

    // A plain error that merely says "timeout" is not a NATS timeout: not retried.
    const plain = new ScriptedNats([new Error('Timeout: no responders 503'), { result: { n: 3 } }]);
    await expect(call(plain)).rejects.toThrow('Timeout: no responders 503');
    expect(plain.subjects).toHaveLength(1);

    const violation = new natsErrors.PermissionViolationError(`Permissions Violation for Publish to "${subject}"`, 'publish', subject);
    const refused = new ScriptedNats([new natsErrors.RequestError(violation.message, { cause: violation }), { result: { n: 4 } }]);
    const err = await call(refused).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermissionDeniedError);
    expect(err).toMatchObject({ code: 'permission-denied', retriable: false });
    expect((err as Error).message).toMatch(/^NATS refused underlay\.rpc\.v1\.h1\.node\.report for node h1: check --node and --nats-creds \(Permissions Violation/);
    expect((err as Error).cause).toBeInstanceOf(natsErrors.RequestError);
    expect(refused.subjects).toHaveLength(1);
  });

  it('gives up at the deadline as unavailable, with the last failure as its cause', async () => {
    const many = Array.from({ length: 50 }, () => ({ code: 'commit-conflict' as const, message: 'moved', retriable: true }));
    const nats = new ScriptedNats(many);
    const err = await call(nats, { deadlineMs: 150 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(err).toMatchObject({ code: 'unavailable', retriable: true });
    expect((err as Error).message).toMatch(/^moved \(gave up after \d+ attempts\)$/);
    expect((err as Error).cause).toBeInstanceOf(RetryExhausted);
    expect(nats.subjects.length).toBeGreaterThan(1);
    expect(nats.subjects.length).toBeLessThan(10);
  });

  it('fromNatsRequestError leaves UnderlayErrors and unknown errors as they are', () => {
    const own = new ConflictError('x');
    expect(fromNatsRequestError(own, 'nodeReport', 's', 'h1')).toBe(own);
    const other = new Error('closed');
    expect(fromNatsRequestError(other, 'nodeReport', 's', 'h1')).toBe(other);
    expect(fromNatsRequestError(new natsErrors.TimeoutError(), 'nodeReport', 's', 'h1')).toMatchObject({ code: 'unavailable', retriable: true });
  });
});
