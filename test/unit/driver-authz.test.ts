/**
 * Docker's authorization hook (services/node-agent/src/driver/authz.ts) against in-memory fakes of the local Docker
 * and the controller client: only `DELETE /networks/…` of an underlay network is asked about, a refusal by the
 * cluster denies it with the controller's text, and any other failure allows it.
 */
import { ConflictError, UnavailableError } from '@underlay/core';
import * as authz from '../../services/node-agent/src/driver/authz';
import { fakeDriver } from './driver-fakes';

const NET = 'a1'.repeat(32);
let f: ReturnType<typeof fakeDriver>;
beforeEach(() => {
  f = fakeDriver({ docker: [{ Id: NET, Name: 'lan', Driver: 'underlay' }, { Id: 'b2'.repeat(32), Name: 'br', Driver: 'bridge' }] });
});
afterEach(() => f.cleanup());

const del = (uri: string) => ({ RequestMethod: 'DELETE', RequestUri: uri, User: 'root' });

describe('AuthZPlugin.AuthZReq', () => {
  it('asks the controller (dry run) about removing an underlay network, by name or id', async () => {
    expect(await authz.authzRequest(f.ctx, del('/v1.45/networks/lan'))).toEqual({ Allow: true });
    expect(await authz.authzRequest(f.ctx, del(`/networks/${NET}?force=1`))).toEqual({ Allow: true });
    expect(f.controller.calls).toEqual([
      { method: 'networkRemove', req: { req: { networkId: NET, dryRun: true }, opts: { deadlineMs: 5_000, timeoutMs: 5_000 } } },
      { method: 'networkRemove', req: { req: { networkId: NET, dryRun: true }, opts: { deadlineMs: 5_000, timeoutMs: 5_000 } } },
    ]);
    expect(f.controller.networks.size).toBe(0);
  });

  it("denies with the controller's text when the cluster refuses", async () => {
    f.controller.removeError = new ConflictError('network lan has endpoints on h2: container web');
    expect(await authz.authzRequest(f.ctx, del('/v1.45/networks/lan'))).toEqual({ Allow: false, Msg: 'network lan has endpoints on h2: container web' });
  });

  it('allows everything else at once: other methods and paths, other drivers, unknown networks, failures', async () => {
    expect(await authz.authzRequest(f.ctx, { RequestMethod: 'GET', RequestUri: '/networks/lan' })).toEqual({ Allow: true });
    expect(await authz.authzRequest(f.ctx, del('/containers/web'))).toEqual({ Allow: true });
    expect(await authz.authzRequest(f.ctx, del('/networks/br'))).toEqual({ Allow: true });
    expect(await authz.authzRequest(f.ctx, del('/networks/nope'))).toEqual({ Allow: true });
    expect(await authz.authzRequest(f.ctx, 'garbage')).toEqual({ Allow: true });
    expect(f.controller.calls).toEqual([]);
    f.controller.failNext('networkRemove', new UnavailableError('the underlay controller did not answer networkRemove'));
    expect(await authz.authzRequest(f.ctx, del('/networks/lan'))).toEqual({ Allow: true });
    expect(f.logs).toEqual(['authorization check of /networks/lan failed, allowing it: the underlay controller did not answer networkRemove']);
    f.docker.down = true;
    expect(await authz.authzRequest(f.ctx, del('/networks/lan'))).toEqual({ Allow: true });
    expect(authz.authzResponse()).toEqual({ Allow: true });
  });
});
