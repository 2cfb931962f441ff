#!/usr/bin/env bash
# One command from a fresh Debian machine to a running single-host underlay (etcd + NATS + controller + agent).
# Extra arguments go to `underlay up` (e.g. --state-dir, --plugin-dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$PATH:/usr/sbin:/sbin"
exec npx underlay up "$@"
