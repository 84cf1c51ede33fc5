#!/usr/bin/env bash
# Launcher throughput and latency: 50 concurrent gRPC clients x 100 mixed requests (submit 20 %,
# get 30 %, list 20 %, cancel 10 %, logs 10 %, health 10 %) against a real aln-launcher on loopback,
# jobs running /bin/true. Writes the JSON of tests/launcher/launcher_load.cpp to OUT (default
# launcher_load.json). ALN_LOAD_CLIENTS / ALN_LOAD_REQUESTS change the shape.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ALN_BUILD_DIR:-$ROOT/build}/bin"
OUT="$(realpath -m "${1:-launcher_load.json}")"
bash "$ROOT/tests/launcher/launcher_load_test.sh" "$BIN/aln" "$BIN/aln-launcher" "$BIN/alnctl" "$BIN/launcher_load" "$OUT"
echo "wrote $OUT"
