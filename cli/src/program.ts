/**
 * The command tree on commander: each command is data (CommandDef: name, arguments, FlagSpecs, config
 * section, sub-commands, a run function), and this module makes commander commands of it. Commander does
 * the argument syntax, `-h`/`--help` on every command, `help COMMAND`, `--version`, unknown-flag and
 * unknown-command suggestions; flags.ts layers the values (flags > UNDERLAY_* > config file > defaults)
 * and each command's zod schema validates them. Nothing runs for `--help`: a command's run function (and
 * for the services the module it loads) is only called once commander has parsed its line.
 *
 * Hand-written here, because commander has no hook for them: booleans written `--name=false` / `--name=0`
 * (become `--no-name`; commander takes no value on a boolean), the environment and config-file layers
 * (commander's `.env()` reads any non-empty value as true for a boolean and has no file layer), and the
 * error texts (usage errors are `UsageError`s, exit code 2, naming the flag and the command that has it).
 */
import { Command, CommanderError, Help, Option } from 'commander';
import { DEFAULT_CONFIG_FILE, configPath, loadConfigSection, type Sections } from './config-file.js';
import { UsageError, envName, resolveFlags, type FlagSpec, type ResolvedFlags } from './flags.js';

export interface RunContext extends ResolvedFlags {
  /** The command's words (`network ls`). */
  path: string;
}

export interface CommandDef {
  name: string;
  aliases?: string[];
  /** One line, in the parent's list. */
  summary: string;
  /** More, in the command's own help. */
  description?: string;
  /** Operands as commander writes them: `[NAME]`, `[NAMES...]` (checked by the command itself). */
  args?: string;
  flags?: FlagSpec[];
  /** The config-file section of its layered flags (client, controller, agent, up, creds). */
  section?: string;
  subcommands?: CommandDef[];
  /** Text after the help (examples). */
  epilog?: string;
  run?: (ctx: RunContext) => Promise<number>;
}

/** A usage error found by commander (unknown flag, missing sub-command, too many arguments): exit code 2. */
export class CommandLineError extends UsageError {
  constructor(
    message: string,
    /** The command's words (`network ls`), '' for `underlay` itself. */
    readonly path: string,
  ) {
    super(message);
    this.name = 'CommandLineError';
  }
}

const pathOf = (c: Command): string => {
  const words: string[] = [];
  for (let x: Command | null = c; x?.parent; x = x.parent) words.unshift(x.name());
  return words.join(' ');
};

/** Commander's messages, as the CLI words them. */
function usageText(cmd: Command, message: string, code: string): string {
  const text = message.replace(/^error: /, '');
  const path = pathOf(cmd);
  if (code === 'commander.unknownOption') {
    const flag = /unknown option '([^']*)'/.exec(text)?.[1] ?? text;
    const name = flag.split('=')[0]!;
    // A flag of a sibling (`network ls --subnet`): say whose it is.
    const owner = cmd.parent?.commands.find((c) => c !== cmd && c.options.some((o) => o.long === name || o.short === name));
    if (owner) return `${name} is a flag of ${pathOf(owner)}`;
    const hint = /\(Did you mean ([^?]+)\?\)/.exec(text)?.[1];
    return `unknown flag ${flag}${hint ? `; did you mean ${hint}?` : ''} (underlay ${path} --help lists the flags)`.replace('underlay  ', 'underlay ');
  }
  if (code === 'commander.unknownCommand') {
    const name = /unknown command '([^']*)'/.exec(text)?.[1] ?? text;
    const hint = /\(Did you mean ([^?]+)\?\)/.exec(text)?.[1];
    return `unknown ${path ? `${path} ` : ''}command ${JSON.stringify(name)}${hint ? `; did you mean ${hint}?` : ''} (underlay ${path ? `${path} ` : ''}--help lists them)`;
  }
  if (code === 'commander.excessArguments') return `${path} takes no arguments here; underlay ${path} --help`;
  return text;
}

/** Commander's command, throwing a CommandLineError for each usage error it finds (instead of exiting). */
class UnderlayCommand extends Command {
  override createCommand(name?: string): Command {
    return new UnderlayCommand(name);
  }

  override error(message: string, errorOptions?: { code?: string; exitCode?: number }): never {
    throw new CommandLineError(usageText(this, message, errorOptions?.code ?? 'commander.error'), pathOf(this));
  }
}

/** A FlagSpec as commander options: the flag, and a hidden `--no-NAME` for a boolean. */
export function optionsOf(s: FlagSpec): Option[] {
  const o = new Option(`${s.short ? `-${s.short}, ` : ''}--${s.flag}${s.boolean ? '' : ` <${s.value ?? 'VALUE'}>`}`, s.help);
  if (s.repeat) o.argParser((v: string, prev: unknown) => [...(Array.isArray(prev) ? (prev as string[]) : []), ...(s.list ? v.split(',') : [v])]);
  else if (s.list) o.argParser((v: string) => v.split(','));
  if (s.default !== undefined) o.default(s.default);
  if (!s.boolean) return [o];
  return [o, new Option(`--no-${s.flag}`, `not --${s.flag}`).hideHelp()];
}

/** Every boolean flag name in the tree (for `--name=false`). */
function booleanFlags(defs: CommandDef[], into = new Set<string>()): Set<string> {
  for (const d of defs) {
    for (const f of d.flags ?? []) if (f.boolean) into.add(f.flag);
    booleanFlags(d.subcommands ?? [], into);
  }
  return into;
}

/** `--name=false` / `--name=0` → `--no-name`, `--name=true` / `--name=1` → `--name`, for boolean flags; up to `--`. */
export function rewriteBooleans(argv: string[], booleans: Set<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return [...out, ...argv.slice(i)];
    const m = /^--([a-z0-9-]+)=(.*)$/s.exec(a);
    if (m && booleans.has(m[1]!)) {
      const v = m[2]!.toLowerCase();
      if (v === 'false' || v === '0') out.push(`--no-${m[1]}`);
      else if (v === 'true' || v === '1' || v === '') out.push(`--${m[1]}`);
      else throw new CommandLineError(`--${m[1]} is true or false (got ${JSON.stringify(m[2])})`, '');
    } else out.push(a);
  }
  return out;
}

function layersNote(flags: FlagSpec[], section: string | undefined): string {
  const layered = flags.filter((f) => f.layered !== false);
  if (!layered.length || !section) return '';
  const ex = layered[0]!;
  return `\nEach of its flags can also be set as UNDERLAY_<FLAG> (--${ex.flag}: ${envName(ex.flag)}) or in the config file, section ${section}: (keys are the flag names; ${DEFAULT_CONFIG_FILE} or --config FILE). Flags win over the environment, which wins over the file.\n`;
}

export interface Program {
  command: Command;
  /** Runs a command line; the exit code (commander's usage errors thrown as CommandLineError). */
  run(argv: string[]): Promise<number>;
}

/** The commander program of these commands. */
export function buildProgram(defs: CommandDef[], opts: { version: string; sections: Sections; about: string }): Program {
  const program = new UnderlayCommand('underlay');
  let result = 0;
  program
    .description(opts.about)
    .usage('[--config FILE] COMMAND [flags]')
    .version(`underlay ${opts.version}`, '-V, --version', 'print the client\'s version (underlay version: the controller\'s too)')
    .option('--config <FILE>', `config file (or UNDERLAY_CONFIG; default ${DEFAULT_CONFIG_FILE}, if it exists)`)
    .helpOption('-h, --help', 'print this command\'s help')
    .helpCommand('help [COMMAND]', 'print a command\'s help')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showSuggestionAfterError(true)
    .exitOverride();
  program.configureOutput({ outputError: () => undefined });

  const add = (parent: Command, d: CommandDef) => {
    const c = parent.command(d.name).summary(d.summary).description(d.description ?? d.summary);
    for (const a of d.aliases ?? []) c.alias(a);
    if (d.args) c.arguments(d.args);
    for (const f of d.flags ?? []) for (const o of optionsOf(f)) c.addOption(o);
    const note = layersNote(d.flags ?? [], d.section);
    if (d.epilog || note) c.addHelpText('after', `${d.epilog ? `\n${d.epilog}\n` : ''}${note}`);
    for (const s of d.subcommands ?? []) add(c, s);
    if (!d.run) return;
    const run = d.run;
    c.action(async function (this: Command) {
      const specs = d.flags ?? [];
      const given: Record<string, unknown> = {};
      const values = this.opts();
      for (const s of specs) {
        const attr = new Option(`--${s.flag}`).attributeName();
        if (this.getOptionValueSource(attr) === 'cli') given[s.key] = values[attr];
      }
      const file = d.section ? loadConfigSection(configPath(program.opts().config as string | undefined), opts.sections, d.section) : undefined;
      const rest = (this.args as string[]).filter((a) => a !== undefined);
      result = await run({ ...resolveFlags(specs, given, process.env, file, rest), path: pathOf(this) });
    });
  };
  for (const d of defs) add(program, d);

  return {
    command: program,
    async run(argv) {
      result = 0;
      try {
        await program.parseAsync(rewriteBooleans(argv, booleanFlags(defs)), { from: 'user' });
      } catch (e) {
        if (!(e instanceof CommanderError)) throw e;
        // Help, asked for (0) or shown because a sub-command is missing (2); the version (0).
        if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return 0;
        if (e.code === 'commander.help') return 2;
        throw new CommandLineError(e.message.replace(/^error: /, ''), '');
      }
      return result;
    },
  };
}

/** Commander's help formatter, for tests and completion. */
export { Help };
