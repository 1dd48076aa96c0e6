#!/usr/bin/env bash
# Installs the Debian 12 packages the build needs, when missing. Sourced by demo.sh and test.sh.
set -euo pipefail

childproc_packages=(g++ cmake ninja-build libboost1.81-dev libboost-json1.81-dev libfmt-dev catch2)
if [ "${CHILDPROC_WITH_CLANG:-0}" = 1 ]; then
  childproc_packages+=(clang-14 libclang-rt-14-dev)
fi
if [ "${CHILDPROC_WITH_GNUPLOT:-0}" = 1 ]; then
  # The main demo's plot (scripts/demo.sh); without it the demo skips only the plot.
  command -v gnuplot > /dev/null || childproc_packages+=(gnuplot-nox)
fi
if [ "${CHILDPROC_WITH_NODE:-0}" = 1 ]; then
  # The Node interop tests run the real node binary (any nodejs package provides it).
  command -v node > /dev/null || childproc_packages+=(nodejs)
fi
if [ "${CHILDPROC_WITH_VIPS:-0}" = 1 ]; then
  # libvips, for the image_processing example; without it CMake skips only that example.
  childproc_packages+=(libvips-dev pkg-config)
fi
if [ "${CHILDPROC_WITH_SQLITE:-0}" = 1 ]; then
  # SQLite, for the order_processing example's stock table; without it CMake skips only that
  # table (the example keeps its stock in a JSON file).
  childproc_packages+=(libsqlite3-dev)
fi
if [ "${CHILDPROC_WITH_REDIS:-0}" = 1 ]; then
  # hiredis for the remote pool (childproc::remote, childproc-agent), and the Redis server its
  # tests start; without them CMake skips the remote pool and its tests say why.
  childproc_packages+=(libhiredis-dev redis-server pkg-config)
fi

missing=()
for p in "${childproc_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" > /dev/null
fi
