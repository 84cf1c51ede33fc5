# Sourced by the other scripts: paths shared by build, test and run.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ALN_VENV:-$ROOT/.venv}"
BUILD_DIR="${ALN_BUILD_DIR:-$ROOT/build}"
# LibTorch of the pinned wheel, found without importing torch (which would load CUDA libraries).
if [[ -z "${Torch_DIR:-}" ]]; then
  Torch_DIR="$("$VENV/bin/python" -c 'import importlib.util,os; print(os.path.join(importlib.util.find_spec("torch").submodule_search_locations[0], "share/cmake/Torch"))')"
fi
export Torch_DIR
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/aln-ccache}"
# Paths below the repo are hashed relative to it, so clones in other directories share the cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
