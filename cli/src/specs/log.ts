/**
 * The services' log flags (controller, agent, up): JSON lines by default, text on a terminal or with
 * `--log-format text`; levels debug, info, warn, error (libs/adapters telemetry/log.ts, pino).
 */
import type { FlagSpec } from '../flags.js';

export const logFlags: FlagSpec[] = [
  { key: 'logFormat', flag: 'log-format', value: 'json|text', help: 'log lines as JSON objects or as text (default: text when stderr is a terminal, json otherwise)' },
  { key: 'logLevel', flag: 'log-level', value: 'LEVEL', help: 'least level logged: debug, info, warn or error', default: 'info' },
];
