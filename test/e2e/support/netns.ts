/** Helpers for the e2e tests that drive netlink code in a child process inside a private network namespace. */

/**
 * What `p` rejects with, or undefined when it resolves: for a test that then checks the error (the
 * error the namespace child sent back for a call it refused).
 */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  return undefined;
}
