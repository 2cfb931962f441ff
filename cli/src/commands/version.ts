/**
 * `underlay version`: this client's version, and the controller's (GET /v1/version) when it answers.
 * Exit 0 when both were printed; 1 when the controller could not be asked (the client's version is still
 * printed, and the reason on stderr), as `docker version` does; `--client` asks nothing (exit 0).
 */
import { z } from 'zod';
import { ApiClient, ClientError, clientFlags, clientOptions, noArgs } from '../client.js';
import { answerFlags, outputOf, printStructured } from '../output.js';
import type { CommandDef, RunContext } from '../program.js';
import { CLIENT_VERSION } from '../version.js';

const ControllerVersion = z.looseObject({ version: z.string(), api: z.string().optional(), name: z.string().optional() });

async function version(p: RunContext): Promise<number> {
  const fmt = outputOf(p, ['table', 'json', 'yaml']);
  noArgs(p, 'version');
  const answer: { client: { version: string }; controller?: z.infer<typeof ControllerVersion> & { url: string } } = { client: { version: CLIENT_VERSION } };
  let failure: string | undefined;
  if (p.values.client !== true) {
    const opts = clientOptions(p);
    try {
      answer.controller = { ...(await new ApiClient(opts).get('/v1/version', ControllerVersion)).data, url: opts.controller };
    } catch (e) {
      if (!(e instanceof ClientError)) throw e;
      failure = e.message;
    }
  }
  if (!printStructured(fmt, answer)) {
    process.stdout.write(`Client:     ${CLIENT_VERSION}\n`);
    if (answer.controller) process.stdout.write(`Controller: ${answer.controller.version} (${answer.controller.url}${answer.controller.name ? `, ${answer.controller.name}` : ''})\n`);
  }
  if (failure) process.stderr.write(`underlay version: the controller was not reachable: ${failure}\n`);
  return failure ? 1 : 0;
}

export const versionCommand: CommandDef = {
  name: 'version',
  summary: 'print the client\'s version and the controller\'s',
  flags: [...clientFlags, ...answerFlags, { key: 'client', flag: 'client', boolean: true, help: 'the client\'s version only (ask no controller)', layered: false }],
  section: 'client',
  run: version,
};
