/** The client's version: the cli package's (cli/package.json, next to dist/ and src/). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';

export const CLIENT_VERSION: string = z.object({ version: z.string().min(1) }).parse(JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'))).version;
