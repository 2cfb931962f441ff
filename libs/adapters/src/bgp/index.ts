export * from './codec.js';
export * from './target.js';
export * from './client.js';
