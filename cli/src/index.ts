export { main, usage } from './main.js';
export * from './flags.js';
