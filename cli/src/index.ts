export { main } from './main.js';
export * from './flags.js';
