/**
 * etcd3 loaded on first use: only the controller (and the CLI commands that speak to etcd) need it, and loading it
 * (with gRPC and its policies) took ~240 ms of every agent start, which holds no etcd credentials and never calls it.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const etcd3 = (): typeof import('etcd3') => require('etcd3') as typeof import('etcd3');
