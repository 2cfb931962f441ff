/**
 * The HTTP API's limits: what a client may cost the controller. Each has a default and bounds (every
 * timer fits Node's 2^31-1 ms); the controller's config (config.ts, flags `--http-*` and
 * `--events-follow-*`) and createHttpApi take them from here, so the numbers live in one place.
 */
import { API_MAX_BODY_BYTES } from '@underlay/core';

export interface HttpLimits {
  /** Time a client has to send a request's headers (slowloris): then 408 and the connection is closed. */
  headersTimeoutMs: number;
  /** Time a client has to send a whole request (headers and body); also the time a connection may go without any traffic while a request is under way. */
  requestTimeoutMs: number;
  /** Time a kept-alive connection may wait idle for its next request. */
  idleTimeoutMs: number;
  /** Largest request head (request line and headers): above it, 431. */
  maxHeaderBytes: number;
  /** Open connections at most; more are closed at once. */
  maxConnections: number;
  /** Largest request body; a larger declared Content-Length is refused (413) before any of it is read, a chunked one is cut off there. */
  maxBodyBytes: number;
  /** `GET /v1/events?follow=true` streams open at once; more are answered 503. */
  followMax: number;
  /** A follow stream ends after this long (`underlay events --follow` opens it again). */
  followMaxMs: number;
  /** A follow client that takes nothing of what it was sent for this long is disconnected (nothing is buffered for it beyond the socket's buffers). */
  followStallMs: number;
}

/** Default and allowed range of each limit. */
export const HTTP_LIMITS: { [K in keyof HttpLimits]: { default: number; min: number; max: number } } = {
  headersTimeoutMs: { default: 10_000, min: 100, max: 600_000 },
  requestTimeoutMs: { default: 30_000, min: 100, max: 3_600_000 },
  idleTimeoutMs: { default: 5_000, min: 100, max: 600_000 },
  maxHeaderBytes: { default: 16 * 1024, min: 1024, max: 64 * 1024 },
  maxConnections: { default: 256, min: 1, max: 65_535 },
  maxBodyBytes: { default: API_MAX_BODY_BYTES, min: 1024, max: 64 * 1024 * 1024 },
  followMax: { default: 32, min: 1, max: 4096 },
  followMaxMs: { default: 3_600_000, min: 1_000, max: 86_400_000 },
  followStallMs: { default: 30_000, min: 100, max: 600_000 },
};

export const defaultLimits = (): HttpLimits =>
  Object.fromEntries(Object.entries(HTTP_LIMITS).map(([k, v]) => [k, v.default])) as unknown as HttpLimits;

/** The limits with defaults filled in, each clamped to its bounds, and headersTimeout ≤ requestTimeout (Node requires it). */
export function resolveLimits(given: Partial<HttpLimits> = {}): HttpLimits {
  const out = defaultLimits();
  for (const k of Object.keys(HTTP_LIMITS) as (keyof HttpLimits)[]) {
    const v = given[k];
    if (v === undefined || !Number.isFinite(v)) continue;
    out[k] = Math.min(HTTP_LIMITS[k].max, Math.max(HTTP_LIMITS[k].min, Math.floor(v)));
  }
  out.headersTimeoutMs = Math.min(out.headersTimeoutMs, out.requestTimeoutMs);
  return out;
}

/** How long a refused request's connection keeps draining what the client still sends, so it can read the answer before the close. */
export const LINGER_MS = 2_000;
/** …and at most this many bytes. */
export const LINGER_BYTES = 1024 * 1024;
