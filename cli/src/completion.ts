/**
 * `underlay completion bash|zsh`: a completion script made from the command tree (commands, sub-commands,
 * their flags), so it never drifts from the CLI. The script finds the command path from the words typed so
 * far (known command names only, skipping flags) and offers that command's sub-commands and flags.
 */
import type { Command } from 'commander';

interface Node {
  path: string;
  words: string[];
}

function nodes(c: Command, path = ''): Node[] {
  const subs = c.commands.filter((x) => x.name() !== 'help');
  const flags = c.options.filter((o) => !o.hidden).flatMap((o) => [o.long, o.short].filter((f): f is string => !!f));
  const words = [...subs.flatMap((s) => [s.name(), ...s.aliases()]), ...flags, '--help'];
  return [{ path, words }, ...subs.flatMap((s) => [s.name(), ...s.aliases()].flatMap((n) => nodes(s, path ? `${path} ${n}` : n)))];
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The shared body: sets `p` (the command path) from words 1..cur-1, then `w` (the words to offer). */
function body(all: Node[], wordsVar: string, first: number, currentVar: string): string {
  const known = all.filter((n) => n.path).map((n) => quote(n.path)).join(' ');
  return [
    `  local p="" x i w`,
    `  local -a known=(${known})`,
    `  for ((i=${first}; i<${currentVar}; i++)); do`,
    `    x="${'$'}{${wordsVar}[i]}"`,
    `    [[ $x == -* ]] && continue`,
    `    for k in "${'$'}{known[@]}"; do [[ "${'$'}{p:+$p }$x" == "$k" ]] && { p="$k"; break; }; done`,
    `  done`,
    `  case "$p" in`,
    ...all.map((n) => `    ${quote(n.path)}) w=${quote(n.words.join(' '))} ;;`),
    `  esac`,
  ].join('\n');
}

export function bashCompletion(program: Command): string {
  return [
    '# bash completion for underlay: source <(underlay completion bash)',
    '_underlay() {',
    body(nodes(program), 'COMP_WORDS', 1, 'COMP_CWORD'),
    '  COMPREPLY=( $(compgen -W "$w" -- "${COMP_WORDS[COMP_CWORD]}") )',
    '}',
    'complete -F _underlay underlay',
    '',
  ].join('\n');
}

export function zshCompletion(program: Command): string {
  return [
    '#compdef underlay',
    '# zsh completion for underlay: source <(underlay completion zsh), or save as _underlay in a directory of $fpath',
    '_underlay() {',
    body(nodes(program), 'words', 2, 'CURRENT'),
    '  compadd -- ${=w}',
    '}',
    'if [[ "${zsh_eval_context[-1]}" == loadautofunc ]]; then _underlay "$@"; else compdef _underlay underlay; fi',
    '',
  ].join('\n');
}
