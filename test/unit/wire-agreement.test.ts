/**
 * parsesTo (libs/core/src/protocol/agree.ts): a wire schema must parse to exactly the input type its decision
 * takes, so the decisions need not import protocol/. The @ts-expect-error lines are the test of the compile-time
 * check (tsc -p tsconfig.test.json and ts-jest fail when one of them compiles); the rest checks that the real
 * schemas' parsed requests go straight into the decisions.
 */
import { z } from 'zod';
import { parsesTo } from '../../libs/core/src/protocol/agree.js';
import {
  NodeHello,
  RequestAddressReq,
  RequestPoolReq,
  decideNodeHello,
  decideRequestAddress,
  decideRequestPool,
  emptyState,
  type AddressRequest,
  type NodeIdentity,
  type PoolRequest,
} from '@underlay/core';

interface Input {
  a: string;
  b?: number;
}

describe('parsesTo', () => {
  it('accepts a schema that parses to the input type and returns it unchanged', () => {
    const s = z.object({ a: z.string(), b: z.number().optional() });
    expect(parsesTo<Input>()(s)).toBe(s);
  });

  it('refuses, at compile time, a schema that drifted from the input type', () => {
    // A field only the schema has.
    // @ts-expect-error the schema does not parse to the decision input
    parsesTo<Input>()(z.object({ a: z.string(), b: z.number().optional(), c: z.string() }));
    // An optional field only the schema has.
    // @ts-expect-error the schema does not parse to the decision input
    parsesTo<Input>()(z.object({ a: z.string(), b: z.number().optional(), c: z.string().optional() }));
    // An optional field only the input type has.
    // @ts-expect-error the schema does not parse to the decision input
    parsesTo<Input>()(z.object({ a: z.string() }));
    // Optional on one side, required on the other.
    // @ts-expect-error the schema does not parse to the decision input
    parsesTo<Input>()(z.object({ a: z.string().optional(), b: z.number().optional() }));
    // Another type.
    // @ts-expect-error the schema does not parse to the decision input
    parsesTo<Input>()(z.object({ a: z.number(), b: z.number().optional() }));
  });

  it("the wire's parsed requests are the decisions' inputs", () => {
    const pool: PoolRequest = RequestPoolReq.parse({ node: 'h1', space: 'underlay', pool: '10.9.0.0/24' });
    const state = emptyState();
    const d = decideRequestPool(state, pool);
    expect(d.result).toEqual({ poolId: expect.any(String), pool: '10.9.0.0/24' });
    const hello: NodeIdentity = NodeHello.parse({ node: 'h1', address: '10.0.0.1' });
    expect(decideNodeHello(state, hello).events).toHaveLength(1);
    const addr: AddressRequest = RequestAddressReq.parse({ node: 'h1', poolId: d.result.poolId });
    expect(() => decideRequestAddress(state, addr)).toThrow(/unknown pool/);
  });
});
