#!/usr/bin/env bash
# Installs underlay on a plain Docker host, from a clone of the repository (deploy/systemd/README.md):
#   - the CLI: the built repository copied to /opt/underlay, /usr/local/bin/underlay linked to it
#     (runs `npm ci` in the clone first when it is not built: that needs Node 20 and npm);
#   - the units underlay-agent.service and underlay-controller.service in /etc/systemd/system;
#   - /etc/underlay/agent.env and controller.env from the examples (mode 0600; existing files are kept),
#     the folders /etc/underlay/nats and /etc/underlay/api, and the system user underlay (controller);
#   - with --enable: systemctl enable --now for the components given.
#
# Usage: install.sh [--enable] [--skip-cli] [--root DIR] [agent] [controller]   (default: agent)
#   --root DIR   install under DIR instead of / (no user, no systemctl; the tests use it)
#   --skip-cli   only units, env files and folders
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
root=""
enable=0
skip_cli=0
components=()
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a folder}"; shift 2 ;;
    --root=*) root="${1#--root=}"; shift ;;
    --enable) enable=1; shift ;;
    --skip-cli) skip_cli=1; shift ;;
    agent|controller) components+=("$1"); shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "${#components[@]}" -gt 0 ] || components=(agent)
root="${root%/}"
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (or give --root DIR)" >&2; exit 1; fi
if [ -n "$root" ] && [ "$enable" = 1 ]; then echo "install.sh: --enable only without --root" >&2; exit 2; fi
has() { local c; for c in "${components[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }

# The CLI.
if [ "$skip_cli" = 0 ]; then
  command -v node >/dev/null || { echo "install.sh: Node.js 20 or later is needed (node not found)" >&2; exit 1; }
  if [ ! -f "$src/cli/dist/main.js" ] || [ ! -d "$src/node_modules" ]; then
    echo "install.sh: building $src (npm ci)"
    (cd "$src" && npm ci --no-audit --no-fund)
  fi
  dest="$root/opt/underlay"
  rm -rf "$dest.new"
  mkdir -p "$dest.new"
  # Workspace packages are linked from node_modules/@underlay with relative links: cp -a keeps them.
  cp -a "$src/package.json" "$src/package-lock.json" "$src/node_modules" "$src/libs" "$src/services" "$src/cli" "$dest.new/"
  rm -rf "$dest"
  mv "$dest.new" "$dest"
  mkdir -p "$root/usr/local/bin"
  ln -sfn /opt/underlay/cli/bin/underlay.js "$root/usr/local/bin/underlay"
  echo "installed the CLI in /opt/underlay: /usr/local/bin/underlay"
fi

# Folders, user, env files.
install -d -m 0755 "$root/etc/underlay" "$root/etc/underlay/nats" "$root/etc/systemd/system" "$root/usr/local/share/doc/underlay"
install -m 0644 "$here/README.md" "$root/usr/local/share/doc/underlay/systemd.md"
if has controller; then
  if [ -z "$root" ] && ! id underlay >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin underlay
    echo "made the system user underlay"
  fi
  install -d -m 0700 "$root/etc/underlay/api"
  [ -n "$root" ] || chown underlay:underlay "$root/etc/underlay/api"
fi
for c in "${components[@]}"; do
  env="$root/etc/underlay/$c.env"
  if [ -e "$env" ]; then
    echo "kept $env"
  else
    install -m 0600 "$here/$c.env.example" "$env"
    echo "wrote $env: edit it"
  fi
  install -m 0644 "$here/underlay-$c.service" "$root/etc/systemd/system/underlay-$c.service"
  echo "installed /etc/systemd/system/underlay-$c.service"
done

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$enable" = 1 ]; then
    for c in "${components[@]}"; do systemctl enable --now "underlay-$c.service"; done
  fi
fi
if [ "$enable" = 0 ]; then
  echo "next: edit /etc/underlay/<component>.env, put the NATS credentials in /etc/underlay/nats/"
  echo "      (underlay creds node NAME --out /etc/underlay/nats/node.creds), then"
  echo "      systemctl enable --now $(printf 'underlay-%s.service ' "${components[@]}")"
fi
