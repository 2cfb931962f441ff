#!/usr/bin/env bash
# Builds underlay as a Docker managed plugin and creates it in the Docker Engine the docker CLI talks to
# (DOCKER_HOST):
#
#   deploy/plugin/build.sh [VERSION]        VERSION defaults to package.json's
#
# IMAGE  the image whose filesystem is the plugin's rootfs (default underlay/underlay:VERSION, built from the
#        repository's Dockerfile when Docker does not have it)
# NAME   the plugin's name (default underlay/underlay:VERSION); written into config.json as DRIVER_NAME, the name
#        the agent looks for in its networks' Driver field
# OUT    keep the plugin directory (rootfs/ and config.json) here instead of a temporary one
#
# Then, on every host: docker plugin set NAME NODE=<host> NATS_URL=nats://… ; docker plugin enable NAME
# (deploy/plugin/README.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="${1:-$(node -p "require(process.argv[1]).version" "$root/package.json")}"
name="${NAME:-underlay/underlay:$version}"
image="${IMAGE:-underlay/underlay:$version}"

if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "building image $image" >&2
  docker build --build-arg "VERSION=$version" -t "$image" "$root"
fi

work="${OUT:-$(mktemp -d)}"
cid=""
cleanup() {
  if [ -n "$cid" ]; then docker rm -f "$cid" >/dev/null 2>&1 || true; fi
  if [ -z "${OUT:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
rm -rf "$work/rootfs"
mkdir -p "$work/rootfs"
cid="$(docker create "$image")"
docker export "$cid" | tar -x -C "$work/rootfs"
# config.json: deploy/plugin/config.json with DRIVER_NAME set to this plugin's name.
node -e '
  const fs = require("fs");
  const [src, dst, name] = process.argv.slice(1);
  const c = JSON.parse(fs.readFileSync(src, "utf8"));
  for (const e of c.env) if (e.name === "DRIVER_NAME") e.value = name;
  fs.writeFileSync(dst, JSON.stringify(c, null, 2) + "\n");
' "$root/deploy/plugin/config.json" "$work/config.json" "$name"
docker plugin create "$name" "$work"
echo "created plugin $name (disabled). Next: docker plugin set $name NODE=<this host> NATS_URL=nats://<server>:4222; docker plugin enable $name" >&2
