// Byte relays for tests that put something between a client and a server (a NATS server reached from a private
// namespace, or unreachable until the test says so): two sockets piped both ways, either side's end or error closing both.
import type * as net from 'node:net';

/** Pipes `a` and `b` into each other; an error or close on either side destroys both. */
export function pipeSockets(a: net.Socket, b: net.Socket): void {
  const close = (): void => {
    a.destroy();
    b.destroy();
  };
  for (const s of [a, b]) {
    s.on('error', close);
    s.on('close', close);
  }
  a.pipe(b);
  b.pipe(a);
}
