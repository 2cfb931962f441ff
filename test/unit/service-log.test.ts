/**
 * The services' log (libs/adapters telemetry/log.ts, pino): JSON lines by default off a terminal, text with
 * `--log-format text` or on a terminal, the least level from `--log-level`, and warnings and errors through the
 * logger's level methods (a plain line function still gets them). The CLI's log flags: validated, taken out of
 * the service's own flags.
 */
import { Writable } from 'node:stream';
import { createServiceLog, defaultLogFormat, failureLog, logDebug, logError, logWarn, type LogFormat, type LogLevel } from '@underlay/adapters';
import { logFlags, takeLogSettings } from '../../cli/src/commands/run';
import { resolveFlags } from '../../cli/src/flags';

function capture(format?: LogFormat, level?: LogLevel, isTTY = false) {
  const lines: string[] = [];
  const stream = Object.assign(new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(...chunk.toString().split('\n').filter(Boolean)), done()) }), { isTTY });
  const log = createServiceLog({ service: 'underlay-controller', instance: 'c1', who: 'controller c1', stream, ...(format ? { format } : {}), ...(level ? { level } : {}) });
  return { log, lines };
}

describe('service log', () => {
  it('writes one JSON object per line by default off a terminal: time, level, service, instance, msg', () => {
    const { log, lines } = capture();
    log('leader (term 1) at seq 0');
    log.warn('campaign failed: etcd unreachable');
    expect(lines).toHaveLength(2);
    const [info, warn] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(info).toMatchObject({ level: 'info', service: 'underlay-controller', instance: 'c1', msg: 'leader (term 1) at seq 0' });
    expect(new Date(String(info!.time)).toISOString()).toBe(info!.time);
    expect(warn).toMatchObject({ level: 'warn', msg: 'campaign failed: etcd unreachable' });
  });

  it('writes text on a terminal or when asked: time, level, who, message', () => {
    for (const { log, lines } of [capture('text'), capture(undefined, undefined, true)]) {
      log('leader (term 1) at seq 0');
      log.error('HTTP GET /v1/x: boom');
      expect(lines[0]).toMatch(/^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] INFO: controller c1: leader \(term 1\) at seq 0$/);
      expect(lines[1]).toMatch(/ERROR: controller c1: HTTP GET \/v1\/x: boom$/);
    }
    expect(defaultLogFormat({ isTTY: true })).toBe('text');
    expect(defaultLogFormat({})).toBe('json');
  });

  it('drops lines below the level', () => {
    const warnOnly = capture('json', 'warn');
    warnOnly.log('info line');
    warnOnly.log.debug('debug line');
    warnOnly.log.warn('warn line');
    expect(warnOnly.lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['warn line']);
    const debug = capture('json', 'debug');
    logDebug(debug.log, 'detail');
    expect(JSON.parse(debug.lines[0]!)).toMatchObject({ level: 'debug', msg: 'detail' });
  });

  it('gives warnings and errors their level, and a plain line function the same text', () => {
    const { log, lines } = capture('json');
    logWarn(log, 'w');
    logError(log, 'e');
    const fl = failureLog(log, 'cluster network reconcile');
    fl.failed(new Error('connect ENOENT /var/run/docker.sock'));
    fl.recovered();
    expect(lines.map((l) => JSON.parse(l) as { level: string; msg: string }).map((l) => `${l.level} ${l.msg}`)).toEqual([
      'warn w',
      'error e',
      'warn cluster network reconcile failed: connect ENOENT /var/run/docker.sock (retrying; logged again when it changes)',
      'info cluster network reconcile works again after 1 failed pass (last: connect ENOENT /var/run/docker.sock)',
    ]);
    const plain: string[] = [];
    logWarn((m) => plain.push(m), 'w');
    logError((m) => plain.push(m), 'e');
    logDebug((m) => plain.push(m), 'dropped');
    expect(plain).toEqual(['w', 'e']);
  });

  it('a child names another part of the process', () => {
    const { log, lines } = capture('json');
    log.child('agent h2', 'h2')('joined');
    expect(JSON.parse(lines[0]!)).toMatchObject({ who: 'agent h2', instance: 'h2', msg: 'joined' });
  });
});

describe('log flags', () => {
  it('takes --log-format and --log-level (or UNDERLAY_LOG_*) out of the values and validates them', () => {
    const p = resolveFlags([...logFlags, { key: 'node', flag: 'node', help: '' }], { logFormat: 'text', node: 'h1' }, { UNDERLAY_LOG_LEVEL: 'debug' });
    expect(takeLogSettings(p.values)).toEqual({ logFormat: 'text', logLevel: 'debug' });
    expect(p.values).toEqual({ node: 'h1' });
    expect(takeLogSettings({})).toEqual({ logLevel: 'info' });
    expect(() => takeLogSettings({ logFormat: 'xml' })).toThrow(/--log-format \(or UNDERLAY_LOG_FORMAT\): .*"json"\|"text"/);
    expect(() => takeLogSettings({ logLevel: 'trace' })).toThrow(/--log-level \(or UNDERLAY_LOG_LEVEL\)/);
  });
});
