#!/usr/bin/env bash
# Installs what is missing, builds the release preset and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cmake --preset release > /dev/null
cmake --build --preset release --target spawn_ls_lh
./build/release/examples/spawn_ls_lh
