// The Helm chart deploy/helm/underlay, checked without helm (no helm binary or cluster on these machines;
// the chart's README says what this covers and what it does not):
// - values.schema.json (draft-07, ajv) accepts values.yaml and each ci/*.yaml merged over it as helm merges,
//   and refuses wrong types, unknown keys and bad enum values; every object in it closes its keys
//   (additionalProperties), and every value it describes has a default in values.yaml;
// - the agent DaemonSet's and controller Deployment's `args` are deploy/container-args.json's, flag for flag and
//   value for value, the placeholders filled from the downward API and the helpers;
// - the templates' actions are balanced ({{ }} pairs; if/range/with/define against end) and every .Values path
//   they read is in values.yaml; every value is in the README's table;
// - the dashboards and alert rules the templates read with .Files.Get are byte-for-byte copies of deploy/grafana
//   and deploy/prometheus.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';

const ROOT = path.resolve(__dirname, '../..');
const CHART = path.join(ROOT, 'deploy/helm/underlay');
const TEMPLATES = path.join(CHART, 'templates');

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const readYaml = (file: string) => parseYaml(fs.readFileSync(file, 'utf8')) as Json;
const defaults = readYaml(path.join(CHART, 'values.yaml')) as Obj;
const schema = JSON.parse(fs.readFileSync(path.join(CHART, 'values.schema.json'), 'utf8')) as Obj;
const ciFiles = fs.readdirSync(path.join(CHART, 'ci')).filter((f) => /\.ya?ml$/.test(f)).sort();

/** Helm's coalescing of user values over the chart's: maps merge key by key, anything else replaces, null deletes. */
function mergeValues(base: Json, over: Json): Json {
  if (!isObj(base) || !isObj(over)) return over;
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else out[k] = k in base ? mergeValues(base[k]!, v) : v;
  }
  return out;
}

/** A copy of `values` with `value` at the dotted path (objects made on the way). */
function withValue(values: Obj, dotted: string, value: Json): Obj {
  const copy = structuredClone(values);
  const keys = dotted.split('.');
  let o: Obj = copy;
  for (const k of keys.slice(0, -1)) {
    if (!isObj(o[k])) o[k] = {};
    o = o[k] as Obj;
  }
  o[keys.at(-1)!] = value;
  return copy;
}

let validate: ValidateFunction;
beforeAll(() => {
  validate = new Ajv({ allErrors: true, strict: true }).compile(schema);
});

const errorsOf = (values: Json) => (validate(values) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`));

describe('values.schema.json', () => {
  test('is draft-07', () => {
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
  });

  test('accepts the defaults (values.yaml)', () => {
    expect(errorsOf(defaults)).toEqual([]);
  });

  test('there are ci/ value files', () => {
    expect(ciFiles.length).toBeGreaterThanOrEqual(4);
  });

  test.each(ciFiles)('accepts ci/%s merged over the defaults', (file) => {
    const merged = mergeValues(defaults, readYaml(path.join(CHART, 'ci', file)));
    expect(errorsOf(merged)).toEqual([]);
  });

  const wrong: [what: string, dotted: string, value: Json][] = [
    ['a string replicas', 'controller.replicas', '3'],
    ['zero replicas', 'controller.replicas', 0],
    ['an unknown top-level key (typo)', 'controler', { replicas: 3 }],
    ['an unknown nested key (typo)', 'controller.pdb.enable', true],
    ['a bad pullPolicy', 'image.pullPolicy', 'Sometimes'],
    ['a capability beyond NET_ADMIN/NET_RAW', 'agent.capabilities', ['NET_ADMIN', 'SYS_ADMIN']],
    ['privileged as a value', 'agent.privileged', true],
    ['2 etcd members', 'etcd.replicas', 2],
    ['an etcd endpoint without a scheme', 'etcd.endpoints', ['etcd:2379']],
    ['a NATS URL with another scheme', 'nats.url', 'http://nats:4222'],
    ['an unknown node-creds source', 'nats.nodeCreds.source', 'file'],
    ['a relative hostPath', 'agent.hostPaths.stateDir', 'var/lib/underlay'],
    ['a bad log level', 'controller.logLevel', 'verbose'],
    ['a bad OTLP protocol', 'otel.protocol', 'http'],
    ['an API token shorter than 16', 'api.tokens', [{ name: 'alice', token: 'short' }]],
    ['a toleration with a misspelt key', 'agent.tolerations', [{ operater: 'Exists' }]],
    ['an extraEnv entry without a name', 'controller.extraEnv', [{ value: 'x' }]],
    ['a number for a boolean', 'metrics.serviceMonitor.enabled', 1],
    ['a bad scrape interval', 'metrics.serviceMonitor.interval', '30 seconds'],
    ['a list for a map of labels', 'metrics.grafanaDashboards.labels', ['grafana_dashboard']],
    ['a non-string label value', 'commonLabels', { team: 7 }],
    ['a port out of range', 'controller.service.port', 70000],
    ['an unknown key in resources', 'controller.resources', { request: { cpu: '100m' } }],
  ];
  test.each(wrong)('refuses %s', (_what, dotted, value) => {
    expect(errorsOf(withValue(defaults, dotted, value)).length).toBeGreaterThan(0);
  });

  /** Objects whose content is a Kubernetes API type (its own schema applies): the only ones left open. */
  const OPEN = new Set([
    'global',
    'controller.extraEnv[].valueFrom',
    'agent.extraEnv[].valueFrom',
    'otel.extraEnv[].valueFrom',
    'controller.affinity.nodeAffinity',
    'controller.affinity.podAffinity',
    'controller.affinity.podAntiAffinity',
    'agent.affinity.nodeAffinity',
    'agent.affinity.podAffinity',
    'agent.affinity.podAntiAffinity',
  ]);

  /** Every object schema, with its dotted path (`[]` for array items). */
  function objectSchemas(s: Obj, at: string, out: [string, Obj][] = []): [string, Obj][] {
    if (s.type === 'object') out.push([at, s]);
    for (const [k, sub] of Object.entries((s.properties as Obj | undefined) ?? {})) objectSchemas(sub as Obj, at ? `${at}.${k}` : k, out);
    if (isObj(s.items)) objectSchemas(s.items, `${at}[]`, out);
    if (isObj(s.additionalProperties)) objectSchemas(s.additionalProperties, `${at}{}`, out);
    for (const k of ['oneOf', 'anyOf'] as const) for (const sub of (s[k] as Obj[] | undefined) ?? []) objectSchemas(sub, at, out);
    return out;
  }

  test('every object says what keys it takes: closed (additionalProperties false or a schema), open only for Kubernetes types', () => {
    const objects = objectSchemas(schema, '');
    expect(objects.length).toBeGreaterThan(40);
    const undeclared = objects.filter(([, s]) => !('additionalProperties' in s)).map(([p]) => p || '(root)');
    const open = objects.filter(([, s]) => s.additionalProperties === true).map(([p]) => p);
    expect(undeclared).toEqual([]);
    expect(open.filter((p) => !OPEN.has(p))).toEqual([]);
    expect(schema.additionalProperties).toBe(false);
  });

  test('every value the schema describes has a default in values.yaml, except inside maps that are empty by default (and every default has a schema: the defaults validate)', () => {
    const missing: string[] = [];
    const walk = (s: Obj, v: Json, at: string) => {
      for (const [k, sub] of Object.entries((s.properties as Obj | undefined) ?? {})) {
        if (at === '' && k === 'global') continue;
        const p = at ? `${at}.${k}` : k;
        if (!isObj(v) || !(k in v)) missing.push(p);
        // An empty map by default ({} resources, affinity): what it may hold is optional.
        else if (!(isObj(v[k]) && Object.keys(v[k] as Obj).length === 0)) walk(sub as Obj, v[k]!, p);
      }
    };
    walk(schema, defaults, '');
    expect(missing).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Templates, read as text (rendering them needs helm)

const templateFiles = fs.readdirSync(TEMPLATES).filter((f) => /\.(ya?ml|tpl|txt)$/.test(f)).sort();
const readTemplate = (f: string) => fs.readFileSync(path.join(TEMPLATES, f), 'utf8');

/** The items of the first `args:` list of a template: one `- item` per line, quotes taken off. */
function argsOf(template: string): string[] {
  const lines = template.split('\n');
  const start = lines.findIndex((l) => /^\s*args:\s*$/.test(l));
  if (start < 0) throw new Error('no args: block');
  const indent = /^(\s*)/.exec(lines[start]!)![1]!.length;
  const items: string[] = [];
  for (const line of lines.slice(start + 1)) {
    const m = /^(\s*)- (.*)$/.exec(line);
    if (!m || m[1]!.length < indent) break;
    items.push(m[2]!.trim().replace(/^"(.*)"$/, '$1'));
  }
  return items;
}

describe('container arguments: exactly deploy/container-args.json', () => {
  const args = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/container-args.json'), 'utf8')) as Record<'agent' | 'controller', string[]>;
  /** What each placeholder of container-args.json is in the templates. */
  const FILLED: Record<string, string> = {
    '{{NODE}}': '$(NODE_NAME)',
    '{{NAME}}': '$(POD_NAME)',
    '{{ETCD_ENDPOINTS}}': '{{ include "underlay.etcdEndpoints" . | quote }}',
    '{{NATS_URL}}': '{{ include "underlay.natsUrl" . | quote }}',
  };
  const cases: [component: 'agent' | 'controller', template: string][] = [
    ['agent', 'daemonset-agent.yaml'],
    ['controller', 'deployment-controller.yaml'],
  ];

  test.each(cases)('%s (%s): the same flags in the same order', (component, template) => {
    const flags = (a: string[]) => a.filter((x) => x.startsWith('--'));
    expect(flags(argsOf(readTemplate(template)))).toEqual(flags(args[component]));
  });

  test.each(cases)('%s (%s): the same values, placeholders filled from the downward API and the helpers', (component, template) => {
    const expected = args[component].map((a) => FILLED[a] ?? a);
    expect(argsOf(readTemplate(template))).toEqual(expected);
  });

  test('the downward-API variables the args use are set', () => {
    const helpers = readTemplate('_helpers.tpl');
    expect(helpers).toMatch(/- name: NODE_NAME\n\s+valueFrom:\n\s+fieldRef:\n\s+fieldPath: spec\.nodeName/);
    expect(helpers).toMatch(/- name: POD_NAME\n\s+valueFrom:\n\s+fieldRef:\n\s+fieldPath: metadata\.name/);
    for (const [, t] of cases) expect(readTemplate(t)).toContain('include "underlay.downwardEnv"');
  });

  test('the parser of args blocks stops at the end of the list (a broken copy is seen)', () => {
    const broken = readTemplate('daemonset-agent.yaml').replace('            - --plugin-dir\n', '');
    expect(argsOf(broken)).not.toEqual(args.agent.map((a) => FILLED[a] ?? a));
  });
});

/** The actions `{{ … }}` of a template, or an error naming an unbalanced one. */
function actionsOf(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    const open = text.indexOf('{{', i);
    const close = text.indexOf('}}', i);
    if (open < 0) {
      if (close >= 0) throw new Error(`"}}" without "{{" at offset ${close}`);
      return out;
    }
    if (close >= 0 && close < open) throw new Error(`"}}" without "{{" at offset ${close}`);
    const end = text.indexOf('}}', open + 2);
    if (end < 0) throw new Error(`"{{" never closed at offset ${open}`);
    const inner = text.slice(open + 2, end);
    if (inner.includes('{{')) throw new Error(`"{{" inside an action at offset ${open}`);
    out.push(inner.replace(/^-?\s*/, '').replace(/\s*-?$/, ''));
    i = end + 2;
  }
}

/** Block structure: if/range/with/define/block each closed by one end; else only inside if/with/range. */
function checkBlocks(actions: string[]): void {
  const stack: string[] = [];
  for (const a of actions) {
    if (a.startsWith('/*')) continue;
    const word = /^([a-z]+)\b/.exec(a)?.[1];
    if (word && ['if', 'range', 'with', 'define', 'block'].includes(word)) stack.push(word);
    else if (word === 'else') {
      if (!['if', 'with', 'range'].includes(stack.at(-1) ?? '')) throw new Error(`"${a}" outside if/with/range`);
    } else if (word === 'end') {
      if (!stack.pop()) throw new Error('"end" without an opening block');
    }
  }
  if (stack.length) throw new Error(`unclosed: ${stack.join(', ')}`);
}

/** Every `.Values.a.b` path (with `.`, `$.` or `$root.` before it). */
const valuePaths = (text: string) => [...new Set([...text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)].map((m) => m[1]!.slice(1)))];

function hasPath(values: Json, dotted: string): boolean {
  let v: Json | undefined = values;
  for (const k of dotted.split('.')) {
    if (!isObj(v) || !(k in v)) return false;
    v = v[k];
  }
  return true;
}

describe('templates (text)', () => {
  test('the expected templates are there', () => {
    for (const f of ['_helpers.tpl', 'NOTES.txt', 'deployment-controller.yaml', 'daemonset-agent.yaml', 'service-controller.yaml', 'service-agent.yaml', 'secret-api-tokens.yaml', 'secret-nats.yaml', 'pdb-controller.yaml', 'servicemonitor.yaml', 'prometheusrule.yaml', 'configmap-dashboards.yaml', 'statefulset-etcd.yaml', 'statefulset-nats.yaml', 'serviceaccount.yaml']) {
      expect(templateFiles).toContain(f);
    }
  });

  test.each(templateFiles)('%s: {{ }} balanced, blocks closed', (f) => {
    expect(() => checkBlocks(actionsOf(readTemplate(f)))).not.toThrow();
  });

  test('an unbalanced template is seen', () => {
    expect(() => actionsOf('a {{ .Values.x } b')).toThrow(/never closed/);
    expect(() => checkBlocks(actionsOf('{{- if .Values.x }}a{{- if .Values.y }}b{{ end }}'))).toThrow(/unclosed: if/);
    expect(() => checkBlocks(actionsOf('{{ end }}'))).toThrow(/without an opening/);
  });

  test.each(templateFiles)('%s: every .Values path it reads is in values.yaml', (f) => {
    const unknown = valuePaths(readTemplate(f)).filter((p) => !hasPath(defaults, p));
    expect(unknown).toEqual([]);
  });

  test('the agent: host network, root with NET_ADMIN/NET_RAW and not privileged, typed hostPaths, every node, system-node-critical, rolling update', () => {
    const t = readTemplate('daemonset-agent.yaml');
    expect(t).toMatch(/hostNetwork: true/);
    expect(t).not.toMatch(/hostPID: true/);
    expect(t).toMatch(/privileged: false/);
    expect(t).toMatch(/drop: \[ALL\]\n\s+add:\n\s+\{\{- toYaml \.Values\.agent\.capabilities/);
    expect(defaults.agent).toMatchObject({ capabilities: ['NET_ADMIN', 'NET_RAW'], priorityClassName: 'system-node-critical', tolerations: [{ operator: 'Exists' }] });
    const hostPaths = [...t.matchAll(/hostPath:\n\s+path: \{\{ \.Values\.[^}]+\}\}\n\s+type: (\w+)/g)].map((m) => m[1]);
    expect(hostPaths).toEqual(['DirectoryOrCreate', 'DirectoryOrCreate', 'Socket', 'File']);
    expect(t).toMatch(/updateStrategy:\n\s+type: RollingUpdate/);
  });

  test('the controller: non-root 10001, read-only root, probes on /healthz and /readyz, anti-affinity; a PodDisruptionBudget', () => {
    const t = readTemplate('deployment-controller.yaml');
    expect(t).toMatch(/runAsNonRoot: true\n\s+runAsUser: 10001/);
    expect(t).toMatch(/readOnlyRootFilesystem: true/);
    expect(t).toMatch(/livenessProbe:\n\s+httpGet:\n\s+path: \/healthz/);
    expect(t).toMatch(/readinessProbe:\n\s+httpGet:\n\s+path: \/readyz/);
    expect(t).toMatch(/podAntiAffinity:/);
    expect(defaults.controller).toMatchObject({ replicas: 3, pdb: { enabled: true } });
    expect(readTemplate('pdb-controller.yaml')).toMatch(/kind: PodDisruptionBudget/);
  });
});

describe('files the templates read (.Files.Get) are copies of the originals', () => {
  const COPIES: [copy: string, original: string][] = [
    ['files/underlay-cluster.json', 'deploy/grafana/underlay-cluster.json'],
    ['files/underlay-agent.json', 'deploy/grafana/underlay-agent.json'],
    ['files/underlay-traces.json', 'deploy/grafana/underlay-traces.json'],
    ['files/underlay-alerts.yml', 'deploy/prometheus/underlay-alerts.yml'],
  ];

  test.each(COPIES)('%s equals %s byte for byte', (copy, original) => {
    expect(fs.readFileSync(path.join(CHART, copy)).equals(fs.readFileSync(path.join(ROOT, original)))).toBe(true);
  });

  test('every file a template reads is one of them, and is there', () => {
    const read = templateFiles.flatMap((f) => [...readTemplate(f).matchAll(/\.Files\.Get (?:"([^"]+)"|\(printf "files\/%s\.json" \$dashboard\))/g)].map((m) => m[1] ?? 'files/<dashboard>.json'));
    expect(read).toContain('files/underlay-alerts.yml');
    const dashboards = /list ("underlay-[a-z]+"(?: "underlay-[a-z]+")*)/.exec(readTemplate('configmap-dashboards.yaml'))![1]!.match(/underlay-[a-z]+/g)!;
    const files = [...read.filter((f) => !f.includes('<')), ...dashboards.map((d) => `files/${d}.json`)];
    for (const f of files) expect(COPIES.map(([c]) => c)).toContain(f);
    expect(files.length).toBe(COPIES.length);
  });
});

describe('README', () => {
  const readme = fs.readFileSync(path.join(CHART, 'README.md'), 'utf8');
  /** Leaf value paths of values.yaml (maps of free keys and lists count as one value). */
  function leaves(v: Json, at: string, out: string[] = []): string[] {
    if (isObj(v) && Object.keys(v).length > 0 && !FREE_MAPS.has(at)) for (const [k, sub] of Object.entries(v)) leaves(sub, at ? `${at}.${k}` : k, out);
    else out.push(at);
    return out;
  }
  const FREE_MAPS = new Set(['metrics.grafanaDashboards.labels', 'controller.resources', 'agent.resources']);

  test('the values table lists every value', () => {
    const missing = leaves(defaults, '').filter((p) => !readme.includes(`| \`${p}\` |`));
    expect(missing).toEqual([]);
  });

  test('says what was tested and what was not', () => {
    expect(readme).toMatch(/## What was tested/);
    expect(readme).toMatch(/not tested/i);
  });
});
