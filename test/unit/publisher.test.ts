/**
 * OrderedPublisher (services/controller/src/publisher.ts) on fakes: a failed publish starts a catch-up from the log,
 * failed catch-ups are retried on the shared ReconcileRunner with backoff until the stream answers again, and the
 * periodic check recreates a stream that went away. The real stream is test/integration/stream-limits.
 */
import type { ClusterEvent } from '@underlay/core';
import type { EtcdEventLog, EventPublisher } from '@underlay/adapters';
import { OrderedPublisher } from '../../services/controller/src/publisher';

const ev = (seq: number) => ({ seq, id: String(seq), time: '2026-01-01T00:00:00Z', actor: 'x', type: 'NodeHello', data: {} }) as unknown as ClusterEvent;

/** A stream that holds what was published; `down` makes every call fail; `gone` makes it look missing. */
function fakeStream() {
  const s = {
    held: [] as number[],
    down: false,
    gone: false,
    calls: 0,
    check() {
      s.calls++;
      if (s.down) throw new Error('no responders');
    },
  };
  const pub = {
    resetPosition() {},
    async ensureStream() {
      s.check();
      if (s.gone) {
        s.gone = false;
        s.held = [];
        return 'created' as const;
      }
      return 'unchanged' as const;
    },
    async streamInPlace() {
      s.check();
      return !s.gone;
    },
    async lastPublishedSeq() {
      s.check();
      return s.held.at(-1) ?? 0;
    },
    async publish(events: readonly ClusterEvent[]) {
      s.check();
      for (const e of events) s.held.push(e.seq);
    },
  };
  return { s, pub: pub as unknown as EventPublisher };
}

function fakeLog(events: ClusterEvent[]) {
  return {
    async head() {
      return events.at(-1)?.seq ?? 0;
    },
    async *read(from: number, page: number) {
      const rest = events.filter((e) => e.seq >= from);
      for (let i = 0; i < rest.length; i += page) yield rest.slice(i, i + page);
    },
  } as unknown as EtcdEventLog;
}

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('OrderedPublisher', () => {
  let p: OrderedPublisher | undefined;
  afterEach(() => {
    p?.stop();
    p = undefined;
  });

  it('catches up from the log after a failed publish, retrying with backoff until the stream answers', async () => {
    const log: ClusterEvent[] = [];
    const { s, pub } = fakeStream();
    const logs: string[] = [];
    p = new OrderedPublisher(pub, fakeLog(log), (m) => logs.push(m), { checkIntervalMs: 0 });
    await p.catchUp();
    log.push(ev(1), ev(2));
    p.enqueue([ev(1), ev(2)]);
    await p.flush();
    expect(s.held).toEqual([1, 2]);

    s.down = true;
    log.push(ev(3));
    p.enqueue([ev(3)]);
    await p.flush();
    // Broken: retried (more than one call while down), logged once.
    const before = s.calls;
    await until(() => s.calls >= before + 2);
    log.push(ev(4));
    p.enqueue([ev(4)]); // while broken: left to the catch-up
    s.down = false;
    await until(() => s.held.length === 4);
    expect(s.held).toEqual([1, 2, 3, 4]);
    expect(logs.filter((l) => /publishing events to JetStream failed/.test(l))).toHaveLength(1);
    // Healthy again: publishes directly.
    log.push(ev(5));
    p.enqueue([ev(5)]);
    await p.flush();
    expect(s.held).toEqual([1, 2, 3, 4, 5]);
  });

  it('notices a missing stream at the periodic check and fills it again', async () => {
    const log = [ev(1), ev(2), ev(3)];
    const { s, pub } = fakeStream();
    p = new OrderedPublisher(pub, fakeLog(log), () => {}, { checkIntervalMs: 30 });
    await p.catchUp();
    expect(s.held).toEqual([1, 2, 3]);
    s.gone = true;
    await until(() => p!.recreated === 1 && s.held.length === 3);
    expect(s.held).toEqual([1, 2, 3]);
  });

  it('does not check while another controller publishes (inactive), and stops retrying when stopped', async () => {
    const { s, pub } = fakeStream();
    let active = false;
    p = new OrderedPublisher(pub, fakeLog([]), () => {}, { checkIntervalMs: 20, active: () => active });
    await new Promise((r) => setTimeout(r, 80));
    expect(s.calls).toBe(0);
    active = true;
    await until(() => s.calls > 0);
    p.stop();
    await new Promise((r) => setTimeout(r, 30));
    const n = s.calls;
    await new Promise((r) => setTimeout(r, 80));
    expect(s.calls).toBe(n);
  });
});
