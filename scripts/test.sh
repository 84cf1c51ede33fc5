#!/usr/bin/env bash
# Sets up everything (idempotent), builds, and runs the whole test suite with CTest.
# Arguments go to ctest (for example -L unit, -R config).
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
"$HERE/setup.sh"
"$HERE/build.sh"
source "$HERE/env.sh"
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 600 -j "${ALN_TEST_JOBS:-2}" "$@"
