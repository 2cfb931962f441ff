/**
 * The services' log, through pino. JSON lines by default (what a log shipper reads): one object per line with
 * `time` (ISO 8601), `level` ("debug", "info", "warn", "error"), `service` (underlay-controller, underlay-agent,
 * underlay), `instance` (the controller's or the node's name), `msg`, and `trace_id`/`span_id` while a span is
 * active (the names OpenTelemetry's pino instrumentation uses). Human text with `--log-format text`, and by
 * default when stderr is a terminal: pino-pretty in the same process (a sync stream, no worker thread), one line
 * `<ISO time> <LEVEL> <who>: <msg>` plus the span ids.
 *
 * The controller and the agent take a plain `(msg: string) => void` for their info lines (their `Logger` type), so
 * they and their tests depend on no logging library; a line that is a warning or an error goes through `logWarn` /
 * `logError`, which use the logger's level methods when it has them (a `ServiceLog` does) and the plain function
 * otherwise.
 */
import { pino, type Logger as PinoLogger } from 'pino';
import { z } from 'zod';
import { activeSpanContext } from './tracing.js';

export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LogOptions = z.object({
  logFormat: z.enum(LOG_FORMATS).optional(),
  logLevel: z.enum(LOG_LEVELS).default('info'),
});

/** A line function (info) with a method per level. */
export interface ServiceLog {
  (msg: string): void;
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  /** The same log naming another part of the process (`who`), e.g. the embedded stack's controller. */
  child(who: string, instance?: string): ServiceLog;
  readonly level: LogLevel;
}

export interface ServiceLogOptions {
  /** `service` in each line: underlay-controller, underlay-agent, underlay. */
  service: string;
  /** `instance`: the controller's or node's name. */
  instance?: string;
  /** Who speaks, in text lines (`controller c1`, `agent h1`). */
  who: string;
  /** json, or text; default: text when `stream` is a terminal, json otherwise. */
  format?: LogFormat;
  level?: LogLevel;
  /** Where lines go (stderr). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; fd?: number };
}

/** text on a terminal, json otherwise (a service under systemd, in a container, or spawned by a test). */
export function defaultLogFormat(stream: { isTTY?: boolean } = process.stderr): LogFormat {
  return stream.isTTY ? 'text' : 'json';
}

const mixin = (): Record<string, string> => {
  const sc = activeSpanContext();
  return sc ? { trace_id: sc.traceId, span_id: sc.spanId } : {};
};

function textStream(stream: NodeJS.WritableStream): NodeJS.WritableStream {
  // Loaded only for text logs (a terminal, --log-format text): services log JSON and never need it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pinoPretty = require('pino-pretty') as typeof import('pino-pretty');
  return pinoPretty({
    destination: stream,
    sync: true,
    colorize: false,
    singleLine: true,
    translateTime: "UTC:yyyy-mm-dd'T'HH:MM:ss.l'Z'",
    ignore: 'pid,hostname,service,instance,who',
    messageFormat: '{who}: {msg}',
    customPrettifiers: {},
  }) as unknown as NodeJS.WritableStream;
}

function wrap(p: PinoLogger<never>, level: LogLevel): ServiceLog {
  const f = ((msg: string) => p.info(msg)) as ServiceLog;
  f.debug = (m) => p.debug(m);
  f.info = (m) => p.info(m);
  f.warn = (m) => p.warn(m);
  f.error = (m) => p.error(m);
  f.child = (who, instance) => wrap(p.child({ who, ...(instance !== undefined ? { instance } : {}) }) as PinoLogger<never>, level);
  Object.defineProperty(f, 'level', { value: level });
  return f;
}

export function createServiceLog(o: ServiceLogOptions): ServiceLog {
  const stream = o.stream ?? process.stderr;
  const format = o.format ?? defaultLogFormat(stream);
  const level = o.level ?? 'info';
  const base = { service: o.service, ...(o.instance !== undefined ? { instance: o.instance } : {}), who: o.who };
  const dest = format === 'text' ? textStream(stream) : stream === process.stderr ? pino.destination({ dest: 2, sync: true }) : stream;
  const p = pino(
    {
      level,
      base,
      mixin,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  ) as PinoLogger<never>;
  return wrap(p, level);
}

type LineFn = (msg: string) => void;

/** A warning: the logger's warn level when it has one, its plain line otherwise. */
export function logWarn(log: LineFn, msg: string): void {
  const w = (log as Partial<ServiceLog>).warn;
  if (typeof w === 'function') w(msg);
  else log(msg);
}

/** An error: the logger's error level when it has one, its plain line otherwise. */
export function logError(log: LineFn, msg: string): void {
  const e = (log as Partial<ServiceLog>).error;
  if (typeof e === 'function') e(msg);
  else log(msg);
}

/** Detail for debugging (dropped unless --log-level debug; a plain line function drops it too). */
export function logDebug(log: LineFn, msg: string): void {
  const d = (log as Partial<ServiceLog>).debug;
  if (typeof d === 'function') d(msg);
}
