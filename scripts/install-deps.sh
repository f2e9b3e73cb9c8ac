#!/usr/bin/env bash
# Installs the Debian 12 packages buildcachefs builds, runs and tests with.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config python3 clang-format-14
  libfuse3-dev fuse3 libssl-dev libzstd-dev zstd libcurl4-openssl-dev libsqlite3-dev
  libtomlplusplus-dev nlohmann-json3-dev zlib1g-dev libarchive-dev
  libgtest-dev libgmock-dev bc openssl curl clang-16 libclang-rt-16-dev
  docker-registry apache2-utils
  systemd util-linux man-db
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
