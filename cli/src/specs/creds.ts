/** `underlay creds`' flags, without the NATS key code. */
import type { FlagSpec } from '../flags.js';

export const credsStateDir: FlagSpec = { key: 'stateDir', flag: 'state-dir', value: 'DIR', help: 'keys are kept in DIR/nats (as underlay up)', default: '/var/lib/underlay' };
export const credsOut: FlagSpec = { key: 'out', flag: 'out', value: 'FILE', help: 'write FILE (mode 0600 for credentials) instead of printing', notInFile: true };
export const credsForce: FlagSpec = { key: 'force', flag: 'force', boolean: true, help: 'replace existing keys (every credential issued with them stops working)', notInFile: true };

export const credsFlags: FlagSpec[] = [credsStateDir, credsOut, credsForce];
