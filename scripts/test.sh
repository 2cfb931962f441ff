#!/usr/bin/env bash
# One command from a fresh Debian machine to every test: unit (pure logic), integration (real etcd
# and NATS), end to end (real dockerd, agents and kernel links in network namespaces). Needs root.
# Prints a closing line "N passed, N failed, N skipped" and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$PATH:/usr/sbin:/sbin"
npx tsc -b
report="$(mktemp /tmp/underlay-jest-XXXXXX.json)"
set +e
# --forceExit: timers inside the gRPC (etcd3) client can outlive closed clients; every server and lab
# process is stopped and checked by the tests themselves.
npx jest --runInBand --ci --forceExit --json --outputFile="$report" "$@"
status=$?
set -e
node -e '
  const r = require(process.argv[1]);
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`suites: ${r.numPassedTestSuites} passed, ${r.numFailedTestSuites} failed, ${r.numTotalTestSuites} total`);
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
  if (skipped > 0) { console.error("skipped tests count as failures here"); process.exit(1); }
' "$report" || status=1
rm -f "$report"
exit "$status"
