export * from './config.js';
export * from './agent.js';
export * from './plugin-server.js';
export type { LinkOps } from './driver/links.js';
