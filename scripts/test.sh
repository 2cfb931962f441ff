#!/usr/bin/env bash
# One command from a fresh Debian machine to every test: unit (pure logic), integration (real etcd
# and NATS), end to end (real dockerd, agents and kernel links in network namespaces). Needs root.
# Prints a closing line "N passed, N failed, N skipped" and exits non-zero on any failure.
#
# Without arguments: the unit project first, with a jest worker per CPU (pure logic, nothing shared; it
# runs alone, so its workers have the machine: 93 s in band, 66 s on 2 workers on the 2-CPU development
# VM, measured back to back while loaded; jest's default is one worker fewer than CPUs), then integration
# and e2e in band (one suite at a time: real services, ports, the lab lock and timing-sensitive checks).
# With arguments: one jest run in band with them (e.g. --selectProjects e2e, or test paths).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$PATH:/usr/sbin:/sbin"
npx tsc -b
# The tests and benchmarks type-checked too: ts-jest compiles each test file alone and lets a type error through.
npx tsc -p tsconfig.test.json
reports=()
status=0
run_jest() {
  local report
  report="$(mktemp /tmp/underlay-jest-XXXXXX.json)"
  reports+=("$report")
  # --forceExit: timers inside the gRPC (etcd3) client can outlive closed clients; every server and lab
  # process is stopped and checked by the tests themselves.
  npx jest --ci --forceExit --json --outputFile="$report" "$@" || status=$?
}
set +e
if [ "$#" -eq 0 ]; then
  run_jest --maxWorkers=100% --selectProjects unit
  run_jest --runInBand --selectProjects integration e2e
else
  run_jest --runInBand "$@"
fi
set -e
node -e '
  const rs = process.argv.slice(1).map((f) => { try { return require(f); } catch (e) { console.error(`no jest report in ${f}: ${e.message}`); return undefined; } });
  if (rs.some((r) => !r)) process.exit(1);
  const sum = (k) => rs.reduce((n, r) => n + r[k], 0);
  const skipped = sum("numPendingTests") + sum("numTodoTests");
  console.log(`suites: ${sum("numPassedTestSuites")} passed, ${sum("numFailedTestSuites")} failed, ${sum("numTotalTestSuites")} total`);
  console.log(`${sum("numPassedTests")} passed, ${sum("numFailedTests")} failed, ${skipped} skipped`);
  if (sum("numTotalTests") === 0) { console.error("no test ran"); process.exit(1); }
  if (skipped > 0) { console.error("skipped tests count as failures here"); process.exit(1); }
' "${reports[@]}" || status=1
rm -f "${reports[@]}"
exit "$status"
