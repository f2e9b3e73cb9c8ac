#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator, npm package `azurite`) for the
# type=azblob tests (tests/servers/azurite_harness.py, tests/e2e/azblob_test.py).
# Idempotent: does nothing when the pinned version is already installed.
#
# Where: $BCFS_TEST_DEPS/azurite (default /opt/buildcachefs-test/azurite), a private npm
# prefix; the harness finds node_modules/.bin/azurite-blob there. Needs node + npm
# (Debian's nodejs/npm are installed when missing) and the npm registry.
set -euo pipefail

version="${AZURITE_VERSION:-3.35.0}"
deps="${BCFS_TEST_DEPS:-/opt/buildcachefs-test}"
dir="$deps/azurite"
bin="$dir/node_modules/.bin/azurite-blob"

installed=""
if [ -f "$dir/node_modules/azurite/package.json" ]; then
  installed=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/node_modules/azurite/package.json" | head -1)
fi
if [ -x "$bin" ] && [ "$installed" = "$version" ]; then
  echo "deps-azurite: azurite $version present in $dir"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "deps-azurite: npm missing; installing Debian's nodejs and npm"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends nodejs npm
fi

echo "deps-azurite: installing azurite@$version into $dir (npm, about 20 s)"
mkdir -p "$dir"
if [ ! -f "$dir/package.json" ]; then
  printf '{"name":"buildcachefs-test-azurite","private":true}\n' > "$dir/package.json"
fi
t=$(date +%s)
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "azurite@$version"
if [ ! -x "$bin" ]; then
  echo "deps-azurite: $bin is missing after npm install" >&2
  exit 1
fi
echo "deps-azurite: azurite $version installed in $(( $(date +%s) - t )) s: $bin"
