#!/usr/bin/env bash
# Sets up everything (idempotent), builds, and runs the main job on its built-in default:
# examples/quickstart.yaml (SFT, then SafeDPO, on a tiny Llama with the GPT-2 tokenizer), metrics on
# localhost:9400 while it runs, before/after table at the end, model in runs/quickstart/final.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
"$HERE/setup.sh"
"$HERE/build.sh"
source "$HERE/env.sh"
cd "$ROOT"
"$BUILD_DIR/bin/aln" version
"$BUILD_DIR/bin/aln" train "$@"
