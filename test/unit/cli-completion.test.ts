/**
 * `underlay completion bash|zsh`: scripts made from the command tree. bash: the script parses (`bash -n`),
 * registers (`complete -p underlay`) and completes commands, sub-commands and flags. zsh is not installed on
 * this machine, so its script is checked for its shape only (the #compdef line, compdef, every command).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const CLI = path.resolve(__dirname, '../../cli/bin/underlay.js');
const script = (shell: string) => spawnSync(process.execPath, [CLI, 'completion', shell], { encoding: 'utf8' });

describe('completion', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-compl-'));
  afterAll(() => fs.rmSync(dir, { recursive: true }));

  it('bash: loads, registers, and completes from the tree', () => {
    const r = script('bash');
    expect(r.status).toBe(0);
    const f = path.join(dir, 'underlay.bash');
    fs.writeFileSync(f, r.stdout);
    expect(spawnSync('bash', ['-n', f]).status).toBe(0);
    const complete = (words: string[]) => {
      const line = ['underlay', ...words];
      const cmd = `source ${f}; COMP_WORDS=(${line.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${line.length - 1}; _underlay; printf '%s\\n' "\${COMPREPLY[@]}"; complete -p underlay >&2`;
      const out = spawnSync('bash', ['-c', cmd], { encoding: 'utf8' });
      expect(out.stderr).toBe('complete -F _underlay underlay\n');
      return out.stdout.trim().split('\n');
    };
    expect(complete(['ne'])).toEqual(['network']);
    expect(complete(['network', ''])).toEqual(expect.arrayContaining(['ls', 'inspect', 'create', 'rm']));
    expect(complete(['network', 'create', '--sub'])).toEqual(['--subnet']);
    expect(complete(['--config', 'x', 'controller', '--etcd-c'])).toEqual(expect.arrayContaining(['--etcd-ca', '--etcd-cert', '--etcd-compact', '--etcd-compact-margin']));
    expect(complete(['node', 'ls', '-'])).toEqual(expect.arrayContaining(['-o', '-q', '--output', '--quiet', '--controller']));
  });

  it('zsh: the script has the shape of a zsh completion (zsh is not installed here)', () => {
    const r = script('zsh');
    expect(r.status).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('#compdef underlay');
    expect(r.stdout).toContain('compdef _underlay underlay');
    expect(r.stdout).toContain('compadd -- ${=w}');
    for (const c of ["'network create')", "'controller')", "'agent')", "'creds node')"]) expect(r.stdout).toContain(c);
  });

  it('refuses another shell (exit 2)', () => {
    const r = script('fish');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('SHELL is bash or zsh');
  });
});
