export * from './config.js';
export * from './committer.js';
export * from './ipam-service.js';
export * from './publisher.js';
export * from './collector.js';
export * from './snapshots.js';
export * from './controller.js';
export * from './leader.js';
