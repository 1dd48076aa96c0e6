#!/usr/bin/env bash
# Installs what is missing, builds the release preset and runs the whole test suite with ctest.
# PRESET=asan|tsan|shared|clang|debug selects another preset.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${PRESET:-release}
[ "$preset" = clang ] && export CHILDPROC_WITH_CLANG=1
export CHILDPROC_WITH_NODE=1
export CHILDPROC_WITH_VIPS=1
export CHILDPROC_WITH_REDIS=1
export CHILDPROC_WITH_SQLITE=1
source scripts/deps.sh
cmake --preset "$preset" > /dev/null
cmake --build --preset "$preset"
ctest --preset "$preset"
