/**
 * The plugin socket is served from the agent's first moment; calls that need the agent's state wait here until
 * start-up is done.
 *
 * Why: dockerd gives a managed plugin about 9.5 s after it starts the plugin's process to listen on its socket
 * (moby's pluginPostStart: 0.5 s, then three more dials 3 s apart), and disables it otherwise, leaving every
 * container on its networks without a driver until someone runs `docker plugin enable`. After a power cut that is
 * a race the agent could lose: its start-up reads Docker, whose API does not answer yet (dockerd restores plugins
 * and containers before it serves), connects to NATS and restores links. So the socket comes first; Docker's
 * static questions (Plugin.Activate, GetCapabilities, the default address spaces) are answered at once, the
 * authorization hook allows what it would allow anyway (everything but a network's removal), and every other
 * call waits for start-up, at most `waitMs` (under Docker's 30 s per plugin call), then fails with a text that says
 * what the agent is doing ("still starting: connecting to NATS at …"), never hanging Docker.
 *
 * Hand-written: a promise with a deadline and a stage text, nothing a library would add.
 */
import { UnavailableError } from '@underlay/core';
import type { Handler, Routes } from './plugin-server.js';

export interface StartupGateOptions {
  /** This host's node name, for the refusal text. */
  node: string;
  /** How long a call waits for start-up before it fails. */
  waitMs: number;
  /** Answers that need no state: given at once, before and after start-up. */
  immediate: Routes;
  /** Answers given before start-up in place of the real route when they return a value (undefined: wait). */
  early?: Routes;
}

export class StartupGate {
  private routes?: Routes;
  private failure?: Error;
  private stageText = 'starting';
  private readonly waiters = new Set<() => void>();

  constructor(private readonly opts: StartupGateOptions) {}

  /** What start-up is doing now (named in refusals): "connecting to NATS at nats://…". */
  stage(text: string): void {
    this.stageText = text;
  }

  get isOpen(): boolean {
    return this.routes !== undefined;
  }

  /** Start-up is done: calls go to these routes from now on, waiting ones at once. */
  open(routes: Routes): void {
    this.routes = routes;
    this.wake();
  }

  /** Start-up failed: waiting and later calls fail with its reason. */
  fail(e: Error): void {
    this.failure = e;
    this.wake();
  }

  /** The table the plugin server serves: one handler per method of `methods`. */
  table(methods: readonly string[]): Routes {
    return Object.fromEntries(methods.map((m) => [m, this.opts.immediate[m] ?? ((body: unknown) => this.call(m, body))]));
  }

  private wake(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  private async call(method: string, body: unknown): Promise<unknown> {
    if (!this.routes && !this.failure) {
      const early = this.opts.early?.[method];
      const answer = early ? await early(body) : undefined;
      if (answer !== undefined) return answer;
      await this.wait(method);
    }
    if (this.failure) throw new UnavailableError(`underlay agent on ${this.opts.node} failed to start: ${this.failure.message}`);
    const handler: Handler | undefined = this.routes![method];
    if (!handler) throw new UnavailableError(`${method} is not served by the underlay agent on ${this.opts.node}`);
    return handler(body);
  }

  private wait(method: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(done);
        const call = method.slice(method.lastIndexOf('.') + 1);
        reject(new UnavailableError(`underlay agent on ${this.opts.node} is still starting (${this.stageText}) after ${Math.round(this.opts.waitMs / 1000)} s; ${call} was not done, try again`));
      }, this.opts.waitMs);
      this.waiters.add(done);
    });
  }
}
