/**
 * Leader election for the controller, the single writer of the event log.
 *
 * One key (LEADER_KEY) holds the leader's name, attached to the leader's lease. A candidate grants a
 * lease, then runs `if key absent → put key (with lease)`; the transaction's revision is the key's
 * create revision, which is the fence: every event-log append compares it, so once the key is gone
 * or re-created by someone else, a deposed leader's writes fail in etcd whatever it believes.
 *
 * Standbys watch the key and try again as soon as it is deleted (lease expired or revoked, resigned).
 *
 * The leader steps down on its own before etcd can hand the key to anybody else: etcd expires the
 * lease TTL after the last keepalive it processed, which happened after we sent it; so the lease is
 * certainly alive until (send time of the last answered keepalive) + TTL. We give up at safeFraction (0.9) of that
 * (monotonic clock), checked by a timer and again, synchronously, in fence() and isLeader().
 */
import { ClientClosedError, EtcdLeaseInvalidError, GRPCDeadlineExceededError, type Etcd3, type IKeyValue, type Lease, type Watcher } from 'etcd3';
import { keys, retry, type Fence, logError, logWarn } from '@underlay/adapters';
import { UnderlayError, type BackoffPolicy } from '@underlay/core';

/** The leader key, from the one keyspace (libs/adapters/src/etcd/keys.ts). */
export const LEADER_KEY = keys.leader;

export interface LeaderElectionOptions {
  client: Etcd3;
  /** This controller's identity, stored as the leader key's value. */
  name: string;
  /** Lease TTL in whole seconds, default 2 (a standby takes over within ~2.5 s of a kill -9). */
  ttlSeconds?: number;
  /** Default LEADER_KEY. */
  key?: string;
  /**
   * Fraction of the TTL after the last answered keepalive's send time at which this controller stops
   * vouching for its lease and steps down (default 0.9). Writes do not depend on it: every append is
   * fenced by the leader key, which disappears with the lease.
   */
  safeFraction?: number;
  /** Deadline of every single etcd call (grant, txn, get, revoke, the watch's set-up), default 5000 ms. */
  callTimeoutMs?: number;
  logger?: (m: string) => void;
  /**
   * How an etcd failure is told in the log, `what` naming the operation (the controller's: `etcd at ENDPOINTS: did not
   * answer within 5000 ms (campaign)`, libs/adapters etcd/client.ts); default: the error's class and message.
   */
  describeError?: (e: unknown, what: string) => string;
}

/** campaign() rejects with this when stop() is called before it was elected. */
export class ElectionStoppedError extends UnderlayError {
  constructor() {
    super('election-stopped', 'leader election stopped');
    this.name = 'ElectionStoppedError';
  }
}

/** Default deadline for single etcd calls (grant, txn, get, revoke, watch set-up). */
const CALL_TIMEOUT_MS = 5_000;
/** Default fraction of the TTL after the last answered keepalive's send time at which we consider the lease lost. */
const SAFE_FRACTION = 0.9;
/** Between failed campaign attempts (etcd unreachable, a call timed out); a new attempt after a standby's wait starts over. */
const CAMPAIGN_BACKOFF: BackoffPolicy = { minMs: 50, maxMs: 1_000 };
/**
 * An etcd call sent while etcd elects a new raft leader (a member died) can be lost without an answer until its
 * deadline. So the election's own calls (a campaign attempt's grant, transaction and watch; a revocation) get a short
 * deadline at first and a longer one at each new try: STEP_MS × the attempt number, at most the call deadline
 * (--etcd-timeout-ms). The next try goes out soon after etcd has a leader again, and a slow etcd still gets the
 * whole deadline after a few tries.
 */
const STEP_MS = 1_000;
/** Between tries to revoke a lease given up (the sooner it goes, the sooner a controller takes over the key). */
const REVOKE_BACKOFF: BackoffPolicy = { minMs: 100, maxMs: 500 };

const now = (): number => performance.now();

interface LeaseHandle {
  lease: Lease;
  /** Lease ID once granted ('' before). */
  id: string;
  /** Monotonic ms until which we vouch for the lease (send time of the last answered keepalive + safeFraction × TTL). */
  validUntil: number;
  /** Send times of keepalives not yet answered on the current stream, oldest first. */
  inFlight: number[];
  dead: boolean;
  timer?: NodeJS.Timeout;
  revoking?: Promise<void>;
  warnedTtl?: boolean;
}

interface Term {
  fence: Fence;
  rev: number;
  handle: LeaseHandle;
}

export class LeaderElection {
  readonly key: string;
  readonly name: string;
  readonly ttlSeconds: number;
  private readonly client: Etcd3;
  private readonly log: (m: string) => void;
  private readonly describe: (e: unknown, what: string) => string;
  private readonly safeMs: number;
  private readonly callTimeoutMs: number;
  private readonly lostCallbacks: ((reason: string) => void)[] = [];
  /** The lease used for the next attempt (standby) or the current term. */
  private handle?: LeaseHandle;
  private term?: Term;
  private watcher?: Watcher;
  private watchReady?: Promise<void>;
  private campaigning?: Promise<Fence>;
  private stopped = false;
  private stopping?: Promise<void>;
  private readonly stoppedSignal: Promise<void>;
  private signalStopped!: () => void;
  /** Aborted by stop(): ends a campaign's wait between attempts. */
  private readonly abort = new AbortController();
  /** Highest revision at which the watch saw the key deleted. */
  private lastDeleteRev = 0;
  private wake?: () => void;
  /** Last holder we logged about, so a waiting standby logs each new holder once. */
  private lastHolder = '';

  constructor(opts: LeaderElectionOptions) {
    const ttl = opts.ttlSeconds ?? 2;
    if (!Number.isInteger(ttl) || ttl < 1) throw new RangeError(`ttlSeconds must be a whole number ≥ 1, got ${ttl}`);
    if (!opts.name) throw new Error('LeaderElection needs a non-empty name');
    this.client = opts.client;
    this.name = opts.name;
    this.key = opts.key ?? LEADER_KEY;
    this.ttlSeconds = ttl;
    const fraction = opts.safeFraction ?? SAFE_FRACTION;
    if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`safeFraction must be in (0, 1], got ${fraction}`);
    this.safeMs = ttl * 1000 * fraction;
    const callMs = opts.callTimeoutMs ?? CALL_TIMEOUT_MS;
    if (!Number.isInteger(callMs) || callMs < 1 || callMs > 2 ** 31 - 1) throw new RangeError(`callTimeoutMs must be a whole number of ms ≥ 1, got ${callMs}`);
    this.callTimeoutMs = callMs;
    this.log = opts.logger ?? (() => {});
    this.describe = opts.describeError ?? ((e) => `etcd: ${errText(e)}`);
    this.stoppedSignal = new Promise<void>((resolve) => (this.signalStopped = resolve));
  }

  /** Campaigns until elected (or stop() is called: rejects with ElectionStoppedError); resolves with the fence. */
  campaign(): Promise<Fence> {
    if (this.stopped) return Promise.reject(new ElectionStoppedError());
    const f = this.fence();
    if (f) return Promise.resolve(f);
    return (this.campaigning ??= this.runCampaign().finally(() => {
      this.campaigning = undefined;
    }));
  }

  /** The current fence while leader, else undefined. */
  fence(): Fence | undefined {
    this.checkLease();
    return this.term?.fence;
  }

  isLeader(): boolean {
    return this.fence() !== undefined;
  }

  /**
   * Registers a callback for the loss of leadership (lease expired/revoked, key deleted or replaced,
   * keepalives failing). Called once per term, after fence() already returns undefined; not called
   * for stop(). After a loss, campaign() may be called again.
   */
  onLost(cb: (reason: string) => void): void {
    this.lostCallbacks.push(cb);
  }

  /** Who is leader now (value of the key), or undefined. */
  async currentLeader(): Promise<string | undefined> {
    const v = await this.client.get(this.key).options(this.callOpts()).string();
    return v ?? undefined;
  }

  /** Resigns (deletes the key if still ours, revokes the lease) and stops campaigning. Idempotent. */
  stop(): Promise<void> {
    return (this.stopping ??= this.doStop());
  }

  // ---------------------------------------------------------------------------------------------

  private async doStop(): Promise<void> {
    this.stopped = true;
    this.signalStopped();
    this.abort.abort();
    this.wake?.();
    const term = this.term;
    this.term = undefined; // a voluntary resignation: no onLost
    if (term) {
      this.log(`resigning leadership of ${this.key} (create revision ${term.fence.createRevision})`);
      try {
        await this.client
          .if(this.key, 'Create', '==', term.fence.createRevision)
          .then(this.client.delete().key(this.key))
          .options(this.callOpts())
          .commit();
      } catch (e) {
        this.log(`could not delete ${this.key} on resign (the lease revocation removes it too): ${this.describe(e, `delete ${this.key}`)}`);
      }
    }
    const handles = new Set([term?.handle, this.handle].filter((h): h is LeaseHandle => h !== undefined));
    await Promise.all([...handles].map((h) => this.dropLease(h, 'stopped', true)));
    const w = this.watcher;
    this.watcher = undefined;
    this.watchReady = undefined;
    if (w) await withTimeout(w.cancel(), 2_000).catch(() => undefined);
  }

  private async runCampaign(): Promise<Fence> {
    this.log(`campaigning for ${this.key} as ${this.name}`);
    for (;;) {
      this.throwIfStopped();
      // Failed attempts are retried with the shared backoff (until stop()); an attempt that found the key held
      // waits for its deletion, and the next one starts with a fresh backoff.
      let r: { fence?: Fence; waitRev?: number };
      try {
        r = await retry((n) => this.attempt(n), {
          backoff: CAMPAIGN_BACKOFF,
          retryIf: () => !this.stopped,
          signal: this.abort.signal,
          onRetry: (e, _n, delayMs) => logWarn(this.log, `campaign attempt failed: ${this.describe(e, `campaign for ${this.key}`)}; retrying in ${delayMs} ms`),
        });
      } catch (e) {
        if (this.stopped) throw new ElectionStoppedError();
        throw e;
      }
      if (r.fence) return r.fence;
      if (r.waitRev !== undefined) await this.waitForDeletion(r.waitRev);
    }
  }

  /**
   * One try for the key: the fence when elected; the revision to wait from when someone else holds it; nothing
   * when the lease went stale as it won (try again at once). Throws when etcd fails (retried by runCampaign).
   */
  private async attempt(n = 1): Promise<{ fence?: Fence; waitRev?: number }> {
    const ms = this.stepMs(n);
    try {
      this.throwIfStopped();
      await withTimeout(this.ensureWatch(), ms, `the watch on ${this.key} to start`);
      this.throwIfStopped();
      const h = await this.ensureLease(ms);
      this.throwIfStopped();
      const res = await this.client
        .if(this.key, 'Create', '==', 0)
        .then(this.client.put(this.key).value(this.name).lease(h.id))
        .else(this.client.get(this.key))
        .options({ deadline: Date.now() + ms })
        .commit();
      this.throwIfStopped(); // stop() revokes h, which removes the key if we just created it
      let createRevision: string | undefined;
      let holder = '';
      if (res.succeeded) {
        createRevision = res.header.revision;
      } else {
        const kv: IKeyValue | undefined = res.responses[0]?.response_range?.kvs?.[0];
        // An earlier attempt whose answer we never got may have created the key with our lease.
        if (kv && kv.lease === h.id) createRevision = kv.create_revision;
        else holder = kv ? `${kv.value.toString()} (lease ${kv.lease}, create revision ${kv.create_revision})` : 'someone';
      }
      if (createRevision !== undefined) {
        if (h.dead || now() >= h.validUntil) {
          this.log(`won ${this.key} but cannot vouch for lease ${h.id} any more; giving it up and retrying`);
          await this.dropLease(h, 'stale when elected');
          return {};
        }
        const fence: Fence = Object.freeze({ key: this.key, createRevision });
        this.lastHolder = '';
        this.term = { fence, rev: Number(createRevision), handle: h };
        this.log(`elected: ${this.name} holds ${this.key} (create revision ${createRevision}, lease ${h.id})`);
        return { fence };
      }
      if (holder !== this.lastHolder) this.log(`${this.key} is held by ${holder}; waiting for it to go`);
      this.lastHolder = holder;
      return { waitRev: Number(res.header.revision) };
    } catch (e) {
      if (this.stopped) throw new ElectionStoppedError();
      if (e instanceof EtcdLeaseInvalidError && this.handle) await this.dropLease(this.handle, 'lease invalid');
      throw e;
    }
  }

  /** Resolves when the key was deleted after `rev` (as seen by the watch), after a TTL as a fallback, or on stop. */
  private async waitForDeletion(rev: number): Promise<void> {
    if (this.lastDeleteRev > rev) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((resolve) => {
          this.wake = resolve;
          // A fallback deadline for this one wait (the watch normally wakes us), not a retry loop.
          timer = setTimeout(resolve, this.ttlSeconds * 1000);
        }),
        this.stoppedSignal,
      ]);
    } finally {
      this.wake = undefined;
      clearTimeout(timer);
    }
  }

  // --- watch ---------------------------------------------------------------------------------

  /** One watch on the key, from the first campaign until stop(); recreated if etcd cancels it. */
  private ensureWatch(): Promise<void> {
    this.throwIfStopped(); // never create a watch that stop() already passed by
    if (this.watcher && this.watchReady) return this.raceStop(this.watchReady);
    const w = this.client.watch().key(this.key).watcher();
    this.watcher = w;
    w.on('put', (kv) => this.onWatchEvent('put', kv))
      .on('delete', (kv) => this.onWatchEvent('delete', kv))
      .on('disconnected', (e) => logWarn(this.log, `etcd watch on ${this.key} disconnected (reconnecting): ${this.describe(e, `watch ${this.key}`)}`))
      .on('error', (e) => this.onWatchError(w, e));
    this.watchReady = new Promise<void>((resolve, reject) => {
      w.once('connected', () => resolve());
      w.once('error', reject);
    });
    this.watchReady.catch(() => undefined);
    return this.raceStop(this.watchReady);
  }

  private onWatchEvent(type: 'put' | 'delete', kv: IKeyValue): void {
    const rev = Number(kv.mod_revision);
    if (type === 'delete') this.lastDeleteRev = Math.max(this.lastDeleteRev, rev);
    const t = this.term;
    if (t && rev > t.rev) {
      if (type === 'delete') {
        this.lose(`leader key ${this.key} was deleted at revision ${rev}`);
      } else if (kv.create_revision !== t.fence.createRevision || kv.lease !== t.handle.id || kv.value.toString() !== this.name) {
        this.lose(`leader key ${this.key} was replaced at revision ${rev} (now ${kv.value.toString()}, lease ${kv.lease})`);
      }
    }
    if (type === 'delete') this.wake?.();
  }

  private onWatchError(w: Watcher, e: unknown): void {
    if (w !== this.watcher) return;
    this.watcher = undefined;
    this.watchReady = undefined;
    void w.cancel().catch(() => undefined);
    if (this.stopped) return;
    logWarn(this.log, `etcd watch on ${this.key} failed, re-creating it: ${this.describe(e, `watch ${this.key}`)}`);
    this.wake?.(); // a campaigning standby retries now (with a new watch)
    const t = this.term;
    if (!t) return;
    // While leader we must not miss a deletion: new watch first, then read the key once.
    void (async () => {
      await withTimeout(this.ensureWatch(), this.safeMs);
      const res = await this.client.get(this.key).options(this.callOpts()).exec();
      const kv = res.kvs[0];
      if (this.term !== t) return;
      if (!kv || kv.create_revision !== t.fence.createRevision || kv.lease !== t.handle.id) {
        this.lose(`leader key ${this.key} is no longer ours (checked after the watch failed)`);
      }
    })().catch((err) => {
      if (this.term === t) this.lose(`cannot watch ${this.key}: ${this.describe(err, `watch ${this.key}`)}`);
    });
  }

  // --- lease ---------------------------------------------------------------------------------

  private async ensureLease(ms = this.callTimeoutMs): Promise<LeaseHandle> {
    this.throwIfStopped(); // never grant a lease that stop() would not revoke
    const cur = this.handle;
    if (cur && !cur.dead && cur.id && now() < cur.validUntil) return cur;
    if (cur) void this.dropLease(cur, 'stale');
    const h = this.newLease(ms);
    this.handle = h;
    h.id = await this.raceStop(withTimeout(h.lease.grant(), ms, `etcd to grant a lease`));
    if (h.dead) throw new Error(`lease ${h.id} was lost right after the grant`);
    return h;
  }

  private newLease(ms: number): LeaseHandle {
    const sentAt = now();
    // The grant request goes out in the constructor; keepalives start when it is answered.
    const lease = this.client.lease(this.ttlSeconds, { autoKeepAlive: true, deadline: Date.now() + ms });
    const h: LeaseHandle = { lease, id: '', validUntil: sentAt + this.safeMs, inFlight: [], dead: false };
    // Responses on a keepalive stream come in request order; a new stream starts a new queue.
    lease.on('keepaliveEstablished', () => {
      h.inFlight = [];
    });
    lease.on('keepaliveFired', () => {
      h.inFlight.push(now());
    });
    lease.on('keepaliveSucceeded', (res) => {
      const sent = h.inFlight.shift();
      if (h.dead || sent === undefined) return;
      h.validUntil = Math.max(h.validUntil, sent + this.safeMs);
      this.armWatchdog(h);
      if (!h.warnedTtl && Number(res.TTL) !== this.ttlSeconds) {
        h.warnedTtl = true;
        this.log(`etcd granted lease ${h.id} a TTL of ${res.TTL} s instead of ${this.ttlSeconds} s (etcd's minimum); failover takes that long`);
      }
    });
    lease.on('keepaliveFailed', (err) => {
      if (!h.dead) logWarn(this.log, `keepalive for etcd lease ${h.id || '(pending)'} failed: ${this.describe(err, `keepalive of lease ${h.id || '(pending)'}`)}`);
    });
    lease.on('lost', (err) => this.leaseDied(h, `etcd lease ${h.id || '(pending)'} lost: ${this.describe(err, `keepalive of lease ${h.id || '(pending)'}`)}`));
    this.armWatchdog(h);
    return h;
  }

  private armWatchdog(h: LeaseHandle): void {
    clearTimeout(h.timer);
    if (h.dead) return;
    // A deadline (the lease's validity), re-armed when a keepalive moved it: not a retry loop.
    h.timer = setTimeout(() => {
      if (h.dead) return;
      if (now() >= h.validUntil) this.leaseDied(h, this.staleReason(h));
      else this.armWatchdog(h);
    }, Math.max(0, h.validUntil - now()) + 1);
    h.timer.unref();
  }

  private staleReason(h: LeaseHandle): string {
    return `etcd answered no keepalive for lease ${h.id || '(pending)'} within ${Math.round(this.safeMs)} ms (of the ${this.ttlSeconds} s TTL)`;
  }

  /** Synchronous check so that fence()/isLeader() are right even if the timer is late (busy event loop). */
  private checkLease(): void {
    const t = this.term;
    if (t && (t.handle.dead || now() >= t.handle.validUntil)) this.leaseDied(t.handle, this.staleReason(t.handle));
  }

  private leaseDied(h: LeaseHandle, reason: string): void {
    if (this.term?.handle === h) this.lose(reason);
    if (!h.dead) this.log(reason);
    void this.dropLease(h, reason);
  }

  /**
   * Stops keepalives and revokes the lease (best effort; removes the key if it is attached): `once` (resigning in
   * stop()) with one call of the whole deadline, else in tries until etcd takes it (see revoke()).
   */
  private dropLease(h: LeaseHandle, _why: string, once = false): Promise<void> {
    h.dead = true;
    clearTimeout(h.timer);
    if (this.handle === h) this.handle = undefined;
    return (h.revoking ??= this.revoke(h, once));
  }

  /**
   * Revokes the lease in tries of growing deadlines (stepMs) until etcd takes it (a lease etcd no longer knows counts:
   * etcd3's revoke ignores that) or until it has certainly expired by itself: its TTL after the last keepalive, which
   * etcd extends by about its election timeout when its raft leader changes (allowed for as the TTL once more) and the
   * call deadline. A lease lost with leadership is revoked this way even after stop(): the controller makes a new
   * election object for each term, and the sooner the old key goes, the sooner a controller leads again.
   */
  private async revoke(h: LeaseHandle, once: boolean): Promise<void> {
    const id = h.id || '(pending)';
    const giveUpAt = now() + 2 * this.ttlSeconds * 1000 + this.callTimeoutMs;
    let delay = REVOKE_BACKOFF.minMs;
    for (let attempt = 1; ; attempt++) {
      const ms = once ? this.callTimeoutMs : this.stepMs(attempt);
      try {
        await withTimeout(h.lease.revoke({ deadline: Date.now() + ms }), ms + 200, `etcd to revoke lease ${id}`);
        if (attempt > 1) this.log(`revoked etcd lease ${id} at try ${attempt}`);
        return;
      } catch (e) {
        const closed = e instanceof ClientClosedError;
        if (once || closed || now() + delay >= giveUpAt) {
          const why = e instanceof GRPCDeadlineExceededError || (e instanceof Error && e.message.startsWith('waited ')) ? `etcd did not answer within ${ms} ms` : this.describe(e, `revoke lease ${id}`);
          this.log(`could not revoke etcd lease ${id}${attempt > 1 ? ` in ${attempt} tries` : ''} (it expires by itself): ${why}`);
          return;
        }
      }
      await new Promise((r) => setTimeout(r, delay).unref());
      delay = Math.min(REVOKE_BACKOFF.maxMs, delay * 2);
    }
  }

  /** The deadline of the election's n-th try of a call: STEP_MS × n, at most the call deadline. */
  private stepMs(n: number): number {
    return Math.min(this.callTimeoutMs, STEP_MS * Math.max(1, n));
  }

  // --- losing --------------------------------------------------------------------------------

  /** Clears the term first (so fence() is undefined at once), then notifies, then cleans up. */
  private lose(reason: string): void {
    const t = this.term;
    if (!t) return;
    this.term = undefined;
    logWarn(this.log, `lost leadership of ${this.key} (create revision ${t.fence.createRevision}): ${reason}`);
    void this.dropLease(t.handle, reason);
    for (const cb of this.lostCallbacks) {
      queueMicrotask(() => {
        try {
          cb(reason);
        } catch (e) {
          logError(this.log, `onLost callback threw: ${errText(e)}`);
        }
      });
    }
  }

  // --- helpers -------------------------------------------------------------------------------

  private callOpts(): { deadline: number } {
    return { deadline: Date.now() + this.callTimeoutMs };
  }

  private throwIfStopped(): void {
    if (this.stopped) throw new ElectionStoppedError();
  }

  /** Awaits p unless stop() comes first (then throws ElectionStoppedError). */
  private async raceStop<T>(p: Promise<T>): Promise<T> {
    const r = await Promise.race([p.then((v) => ({ v })), this.stoppedSignal.then(() => undefined)]);
    if (!r) throw new ElectionStoppedError();
    return r.v;
  }

}

function errText(e: unknown): string {
  return e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
}

/** A deadline for one etcd call (not a retry). */
function withTimeout<T>(p: Promise<T>, ms: number, what = 'etcd'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`waited ${ms} ms for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
