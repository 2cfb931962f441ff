/**
 * Publishes committed events to JetStream in order. On start, and after any failure, it catches up
 * from the log in etcd starting after the last event the stream holds, so every event reaches the
 * stream exactly once per message id even if the controller died between commit and publish.
 */
import type { ClusterEvent } from '@underlay/core';
import type { EtcdEventLog, EventPublisher } from '@underlay/adapters';

export class OrderedPublisher {
  private chain: Promise<void> = Promise.resolve();
  private publishedSeq = 0;
  private broken = false;
  private stopped = false;

  constructor(
    private readonly pub: EventPublisher,
    private readonly log: EtcdEventLog,
    private readonly logger: (m: string) => void = () => {},
  ) {}

  /** Republishes whatever the stream lacks. Resolves or rejects with this attempt; retries by itself. */
  catchUp(): Promise<void> {
    const run = this.chain.then(async () => {
      this.pub.resetPosition();
      this.publishedSeq = await this.pub.lastPublishedSeq();
      for await (const page of this.log.read(this.publishedSeq + 1, 1000)) {
        for (let i = 0; i < page.length; i += 100) {
          const part = page.slice(i, i + 100);
          await this.pub.publish(part);
          this.publishedSeq = part[part.length - 1]!.seq;
        }
      }
      this.broken = false;
    });
    this.chain = run.catch((err) => this.fail(err));
    return run;
  }

  enqueue(events: ClusterEvent[], encoded?: string[]): void {
    this.chain = this.chain
      .then(async () => {
        // While broken, the pending catch-up reads these from etcd.
        if (this.broken) return;
        const skip = events.findIndex((e) => e.seq > this.publishedSeq);
        if (skip < 0) return;
        const fresh = events.slice(skip);
        await this.pub.publish(fresh, encoded?.slice(skip));
        this.publishedSeq = fresh[fresh.length - 1]!.seq;
      })
      .catch((err) => this.fail(err));
  }

  private fail(err: unknown): void {
    if (this.stopped) return;
    const first = !this.broken;
    this.broken = true;
    if (first) this.logger(`publishing events failed (${(err as Error).message}); catching up from etcd`);
    const t = setTimeout(() => void this.catchUp().catch(() => {}), 500);
    t.unref();
  }

  stop(): void {
    this.stopped = true;
  }

  /** Resolves when everything enqueued so far has been published (or has failed). */
  flush(): Promise<void> {
    return this.chain;
  }
}
