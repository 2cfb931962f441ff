/**
 * After Join: the network learns a new endpoint's MAC at once (issue 15 item 2). A peer that cached the previous
 * owner of the address (another container, another MAC) would otherwise keep sending to it until its cache expires
 * (Linux: 30-60 s REACHABLE, then a probe; switches and routers: up to hours).
 *
 * Join runs before the container's link is in its namespace: Docker moves the link into the sandbox (Join's
 * SandboxKey) and configures it after Join returns, and the link's per-device sysctls do not survive the move. So,
 * asynchronously and never holding up Join:
 *  1. wait (bounded) until the sandbox key is a network namespace (an nsfs mount) and, in it, the endpoint's link
 *     (by its MAC) is up and carries the endpoint's address;
 *  2. in that namespace (`nsenter --net=<key>`, every argument validated, none from a user), enable
 *     `net.ipv4.conf.{all,<if>}.arp_notify` and, with an IPv6 address, `net.ipv6.conf.{all,<if>}.ndisc_notify`;
 *  3. set the link's MAC to its current value: the kernel's NETDEV_CHANGEADDR makes it send a gratuitous ARP for its
 *     IPv4 address and an unsolicited neighbour advertisement (override flag) for its IPv6 addresses, which a peer
 *     applies even to a REACHABLE entry.
 * The namespace's settings stay, so the kernel also announces when the link comes up again.
 *
 * macvlan only: an ipvlan link has no MAC of its own (it cannot be set, so step 3 does not apply; l3/l3s answer no
 * ARP at all). A container gone before its link was ready is not an error (a debug line).
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { UnderlayError } from '@underlay/core';

/** The outcome of one announcement (the `result` label of underlay_agent_neighbour_announcements_total). */
export type AnnounceResult = 'sent' | 'gone' | 'timeout' | 'error' | 'unavailable';

/** One endpoint to announce. */
export interface AnnounceTarget {
  endpointId: string;
  networkId?: string;
  /** Join's SandboxKey: the container's network namespace (a bind mount of nsfs) once Docker made it. */
  sandboxKey: string;
  /** The endpoint's MAC (aa:bb:cc:dd:ee:ff). */
  mac: string;
  /** Bare addresses (no prefix length); at least one. */
  address?: string | undefined;
  addressV6?: string | undefined;
}

/** Runs a program with arguments (no shell); resolves with its exit code (null: killed) and output. */
export type Exec = (file: string, args: string[], timeoutMs: number) => Promise<{ code: number | null; stdout: string; stderr: string; missing?: boolean }>;

export interface AnnouncerOptions {
  log: { debug(msg: string): void; warn(msg: string): void };
  /** Called once per announcement with its result and the time since Join. */
  observe?: (result: AnnounceResult, seconds: number) => void;
  /** Give up after this long (default 10 s: Docker has usually started the container well before). */
  deadlineMs?: number;
  /** Between polls (default 50 ms). */
  intervalMs?: number;
  exec?: Exec;
  /** An nsfs mount? (default: statfs's type is NSFS_MAGIC). */
  isNamespace?: (path: string) => Promise<boolean>;
  nsenter?: string;
  /**
   * Where the sandbox key is not visible (dockerd in another mount namespace: a lab host, some installs): the
   * container's namespace by other means, e.g. `/proc/<its pid>/ns/net` from Docker; undefined while not known.
   */
  findNamespace?: (t: AnnounceTarget) => Promise<string | undefined>;
}

const NSFS_MAGIC = 0x6e736673;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
/** A link name the kernel accepts, and safe in a sysctl path (no '/', no '.' ambiguity: the slash form is used). */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const STEP_TIMEOUT_MS = 3_000;

/** A sandbox key Docker gives (/var/run/docker/netns/<id>, or a runtime's path): absolute, plain characters, no `..`. */
export function validSandboxKey(p: string): boolean {
  return p.length <= 4096 && /^\/[A-Za-z0-9._/-]+$/.test(p) && !p.split('/').includes('..');
}

const IpAddr = z.looseObject({ family: z.string(), local: z.string().optional(), tentative: z.boolean().optional() });
const IpLink = z.looseObject({
  ifname: z.string(),
  flags: z.array(z.string()).default([]),
  address: z.string().optional(),
  addr_info: z.array(IpAddr).default([]),
});
/** `ip -j addr show`'s answer. */
export const IpAddrShow = z.array(IpLink);

/**
 * The endpoint's link in `ip -j addr show`'s answer, once it is ready to announce: up, with the endpoint's MAC and
 * every address of the target. undefined while it is not.
 */
export function readyLink(links: z.infer<typeof IpAddrShow>, t: AnnounceTarget): { ifname: string; mac: string } | undefined {
  const l = links.find((x) => x.address?.toLowerCase() === t.mac);
  if (!l || !l.flags.includes('UP') || !IFNAME.test(l.ifname)) return undefined;
  // A tentative IPv6 address (duplicate address detection running) is announced by the kernel itself when DAD
  // completes, once ndisc_notify is on: waiting for it would hold up the IPv4 announcement by a second or more.
  const has = (family: string, a: string | undefined) => !a || l.addr_info.some((i) => i.family === family && i.local === a);
  if (!has('inet', t.address) || !has('inet6', t.addressV6)) return undefined;
  return { ifname: l.ifname, mac: t.mac };
}

/** `sysctl -w` arguments (slash form: a link name may hold dots) that make the kernel announce on a MAC change. */
export function notifySysctls(ifname: string, v4: boolean, v6: boolean): string[] {
  const out: string[] = [];
  if (v4) out.push('net/ipv4/conf/all/arp_notify=1', `net/ipv4/conf/${ifname}/arp_notify=1`);
  if (v6) out.push('net/ipv6/conf/all/ndisc_notify=1', `net/ipv6/conf/${ifname}/ndisc_notify=1`);
  return out;
}

const defaultExec: Exec = (file, args, timeoutMs) =>
  new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 1 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
      if (e && e.code === 'ENOENT' && typeof e.syscall === 'string' && e.syscall.startsWith('spawn')) {
        resolve({ code: null, stdout: '', stderr: e.message, missing: true });
        return;
      }
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout, stderr });
    });
  });

async function statfsIsNamespace(p: string): Promise<boolean> {
  try {
    return (await fs.statfs(p)).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** The endpoint left, or its namespace went away, before the announcement: nothing to announce to. */
export class AnnounceGoneError extends UnderlayError {
  constructor(message: string) {
    super('not-found', message);
    this.name = 'AnnounceGoneError';
  }
}

/** The container's namespace or link did not appear within the announcement's deadline. */
export class AnnounceTimeoutError extends UnderlayError {
  constructor(message: string) {
    super('unavailable', message, { retriable: false });
    this.name = 'AnnounceTimeoutError';
  }
}

/** Announces joined endpoints, one at a time per endpoint; `cancel` on Leave. */
export class Announcer {
  private readonly active = new Map<string, { cancelled: boolean }>();
  private readonly exec: Exec;
  private readonly isNamespace: (p: string) => Promise<boolean>;
  private readonly deadlineMs: number;
  private readonly intervalMs: number;
  private readonly nsenter: string;
  private missingLogged = false;

  constructor(private readonly opts: AnnouncerOptions) {
    this.exec = opts.exec ?? defaultExec;
    this.isNamespace = opts.isNamespace ?? statfsIsNamespace;
    this.deadlineMs = opts.deadlineMs ?? 10_000;
    this.intervalMs = opts.intervalMs ?? 50;
    this.nsenter = opts.nsenter ?? 'nsenter';
  }

  /** Starts announcing `t` in the background; the promise (for tests) resolves with the result and never rejects. */
  announce(t: AnnounceTarget): Promise<AnnounceResult> {
    const started = process.hrtime.bigint();
    const prev = this.active.get(t.endpointId);
    if (prev) prev.cancelled = true;
    const state = { cancelled: false };
    this.active.set(t.endpointId, state);
    return this.run(t, state)
      .catch((e: unknown): AnnounceResult => {
        if (e instanceof AnnounceGoneError || state.cancelled) {
          this.opts.log.debug(`endpoint ${t.endpointId.slice(0, 12)}: no neighbour announcement, the container's network namespace went first (${(e as Error).message})`);
          return 'gone';
        }
        if (e instanceof AnnounceTimeoutError) {
          this.opts.log.warn(`endpoint ${t.endpointId.slice(0, 12)}: no neighbour announcement: ${e.message} (peers update their neighbour caches when they expire)`);
          return 'timeout';
        }
        this.opts.log.warn(`endpoint ${t.endpointId.slice(0, 12)}: could not announce its MAC ${t.mac} to the network (peers update their neighbour caches when they expire): ${(e as Error).message}`);
        return 'error';
      })
      .then((result) => {
        if (this.active.get(t.endpointId) === state) this.active.delete(t.endpointId);
        this.opts.observe?.(result, Number(process.hrtime.bigint() - started) / 1e9);
        return result;
      });
  }

  /** The endpoint left (Leave): stop waiting for it. */
  cancel(endpointId: string): void {
    const s = this.active.get(endpointId);
    if (s) s.cancelled = true;
  }

  private async run(t: AnnounceTarget, state: { cancelled: boolean }): Promise<AnnounceResult> {
    if (!validSandboxKey(t.sandboxKey)) throw new Error(`the sandbox key ${JSON.stringify(t.sandboxKey)} is not a path underlay uses`);
    if (!MAC.test(t.mac)) throw new Error(`the MAC ${JSON.stringify(t.mac)} is malformed`);
    if (t.address !== undefined && isIP(t.address) !== 4) throw new Error(`${JSON.stringify(t.address)} is not an IPv4 address`);
    if (t.addressV6 !== undefined && isIP(t.addressV6) !== 6) throw new Error(`${JSON.stringify(t.addressV6)} is not an IPv6 address`);
    if (!t.address && !t.addressV6) return 'sent'; // nothing to announce
    const deadline = Date.now() + this.deadlineMs;
    const check = () => {
      if (state.cancelled) throw new AnnounceGoneError('the endpoint left');
    };
    let ns: string | undefined;
    const inNs = async (args: string[], what: string) => {
      const r = await this.exec(this.nsenter, [`--net=${ns}`, '--', ...args], STEP_TIMEOUT_MS);
      if (r.missing) throw Object.assign(new Error(`${this.nsenter} is not installed (util-linux)`), { missing: true });
      if (r.code !== 0) {
        if (!(await this.isNamespace(ns!))) throw new AnnounceGoneError(`its namespace ${ns} is gone`);
        throw new Error(`${what} failed (exit ${r.code ?? 'killed'}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
      }
      return r.stdout;
    };

    let link: { ifname: string; mac: string } | undefined;
    let waitingFor = `the network namespace ${t.sandboxKey}`;
    try {
      while (!link) {
        check();
        if (Date.now() > deadline) {
          throw new AnnounceTimeoutError(`waited ${this.deadlineMs} ms for ${waitingFor}`);
        }
        if (!ns && (await this.isNamespace(t.sandboxKey))) ns = t.sandboxKey;
        if (!ns && this.opts.findNamespace) {
          const found = await this.opts.findNamespace(t).catch(() => undefined);
          if (found && /^\/proc\/[1-9]\d*\/ns\/net$/.test(found) && (await this.isNamespace(found))) ns = found;
        }
        if (ns) {
          waitingFor = `the link with MAC ${t.mac} to be up with ${[t.address, t.addressV6].filter(Boolean).join(' and ')} in ${ns}`;
          const out = await inNs(['ip', '-j', 'addr', 'show'], 'listing the links');
          const parsed = IpAddrShow.safeParse(JSON.parse(out || '[]'));
          if (!parsed.success) throw new Error(`ip -j addr show answered what underlay cannot read: ${parsed.error.message.slice(0, 200)}`);
          link = readyLink(parsed.data, t);
        }
        if (!link) await sleep(this.intervalMs);
      }
      check();
      await inNs(['sysctl', '-q', '-w', ...notifySysctls(link.ifname, !!t.address, !!t.addressV6)], 'enabling arp_notify/ndisc_notify');
      await inNs(['ip', 'link', 'set', 'dev', link.ifname, 'address', link.mac], 'setting the MAC');
      return 'sent';
    } catch (e) {
      if ((e as { missing?: boolean }).missing) {
        if (!this.missingLogged) this.opts.log.warn(`neighbour announcements are off: ${(e as Error).message}`);
        this.missingLogged = true;
        return 'unavailable';
      }
      // A container that exited before its link was ready: its key is unmounted (or removed) and Leave follows.
      if (!(e instanceof AnnounceGoneError) && Date.now() > deadline && !(ns && (await this.isNamespace(ns)))) throw new AnnounceGoneError(`${t.sandboxKey} never became a network namespace this agent can see`);
      throw e;
    }
  }
}
