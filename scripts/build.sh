#!/usr/bin/env bash
# Configures and builds Aln into build/ (ccache + Ninja). Extra arguments go to CMake's configure,
# for example -DALN_WITH_CUDA=OFF or -DTorch_DIR=/opt/libtorch/share/cmake/Torch.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
start=$(date +%s)
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
# Configure when the build tree is new or incomplete, or when options are given.
if [[ ! -f "$BUILD_DIR/build.ninja" && ! -f "$BUILD_DIR/Makefile" ]] || [[ $# -gt 0 ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" "${generator[@]}" -DTorch_DIR="$Torch_DIR" -DPython3_EXECUTABLE="$VENV/bin/python" "$@"
fi
cmake --build "$BUILD_DIR" --parallel "${ALN_BUILD_JOBS:-$(nproc)}"
echo "[build] done in $(( $(date +%s) - start )) s"
