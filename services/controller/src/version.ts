/** The controller's version (services/controller/package.json's; test/integration/api.test.ts checks they agree). */
export const CONTROLLER_VERSION = '0.1.0';
