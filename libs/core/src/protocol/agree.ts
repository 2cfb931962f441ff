/**
 * Compile-time agreement between a wire schema and the plain type a decision below takes (the decisions never
 * import protocol/: the wire parses into their types). Nothing is checked at run time.
 */
import type { z } from 'zod';

/** true when A and B have the same keys and each is assignable to the other (optional-ness included). */
export type SameShape<A, B> = [A] extends [B]
  ? [B] extends [A]
    ? [keyof A] extends [keyof B]
      ? [keyof B] extends [keyof A]
        ? true
        : false
      : false
    : false
  : false;

/**
 * `parsesTo<PoolRequest>()(z.object({...}))` returns the schema unchanged, and fails `tsc` at the schema when
 * what it parses to and `Domain` differ (a field added, dropped, made optional or retyped on one side only).
 */
export const parsesTo =
  <Domain>() =>
  <S extends z.ZodType>(schema: S & (SameShape<z.output<S>, Domain> extends true ? unknown : 'the schema does not parse to the decision input')): S =>
    schema;
