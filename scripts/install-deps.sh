#!/usr/bin/env bash
# Installs what underlay needs on a fresh Debian machine (run as root): the Debian packages that are
# missing, then the npm dependencies (npm ci also builds the TypeScript, through the prepare script).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] || [ -x "/sbin/$1" ]; }
have etcd        || need+=(etcd-server)
have nats-server || need+=(nats-server)
have dockerd     || need+=(docker.io)
have busybox     || need+=(busybox-static)
have ip          || need+=(iproute2)
have nsenter     || need+=(util-linux)
have linux.uml   || need+=(user-mode-linux)   # ipvlan, 802.1q and dummy tests run in a UML kernel
have gobgpd      || need+=(gobgpd)            # BGP tests: gobgpd and gobgp 3.10
have openssl     || need+=(openssl)           # TLS tests: a throw-away CA (test/lab/pki.ts)
have promtool    || need+=(prometheus)        # monitoring tests: promtool and a real Prometheus (test/lab/prometheus.ts)
have systemd-analyze || need+=(systemd)       # deploy/systemd test: systemd-analyze verify
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "underlay: installing ${need[*]} needs root (sudo $0)" >&2; exit 1; fi
  echo "underlay: installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# /usr/sbin holds dockerd and nats-server on Debian.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npx tsc -b
fi
