// Three projects: unit (pure logic, no services), integration (real etcd + NATS),
// e2e (real dockerd, kernel links in network namespaces; needs root).
const moduleNameMapper = {
  '^@underlay/core$': '<rootDir>/libs/core/src/index.ts',
  '^@underlay/adapters$': '<rootDir>/libs/adapters/src/index.ts',
  '^@underlay/controller$': '<rootDir>/services/controller/src/index.ts',
  '^@underlay/node-agent$': '<rootDir>/services/node-agent/src/index.ts',
  '^@underlay/cli$': '<rootDir>/cli/src/index.ts',
  '^(\\.{1,2}/.*)\\.js$': '$1',
};
const project = (name) => ({
  displayName: name,
  rootDir: __dirname,
  testEnvironment: 'node',
  moduleNameMapper,
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }] },
  testMatch: [`<rootDir>/test/${name}/**/*.test.ts`],
});
module.exports = {
  projects: [project('unit'), project('integration'), project('e2e')],
};
