#!/usr/bin/env bash
# Installs what is missing, builds the release preset's demo and runs it: a Beast HTTP server whose
# /heavy-task runs on its event loop, then in child processes and threads (docs/demo.md). The
# table is printed; results.json and demo.png go to build/demo/. Arguments go to the demo
# (--short, --seconds S, --serve PORT, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export CHILDPROC_WITH_GNUPLOT=1
source scripts/deps.sh
cmake --preset release > /dev/null
cmake --build --preset release --target childproc_demo
./build/release/demo/childproc_demo --out build/demo "$@"
