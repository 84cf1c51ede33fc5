#!/usr/bin/env bash
# Sets up everything (idempotent), builds, and runs the main job on its built-in default.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
"$HERE/setup.sh"
"$HERE/build.sh"
source "$HERE/env.sh"
"$BUILD_DIR/bin/aln" version
# Training lands with the alignment core; until then the main job validates the built-in default
# job and prints its resolved plan (the smallest real thing that exists).
"$BUILD_DIR/bin/aln" train --dry-run "$@"
