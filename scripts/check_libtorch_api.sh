#!/usr/bin/env bash
# Compiles Aln's LibTorch-facing sources (syntax and types only, nothing linked) against another
# LibTorch's headers, here, without a GPU: the GPU machine builds against PyTorch 2.11's LibTorch
# (../shared/DEVICE.md) while this machine has a newer one, and an API that differs would otherwise
# first show in the GPU machine's few minutes. Fetches that version's wheel (headers only are kept)
# into build-libtorch-api/VERSION (ignored; kept out of .device, which travels to the GPU machine),
# then reruns build/compile_commands.json's commands for the sources that include LibTorch, with its
# include folders swapped, two at a time.
#   scripts/check_libtorch_api.sh [VERSION]   (default 2.11.0; needs build/ configured)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version="${1:-2.11.0}"
dest="build-libtorch-api/$version"
if [[ ! -f $dest/.done ]]; then
  rm -rf "$dest" && mkdir -p "$dest"
  .venv/bin/python -m pip download -q torch=="$version" --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$dest"
  unzip -q "$dest"/torch-*.whl 'torch/include/*' 'torch/version.py' -d "$dest"
  rm -f "$dest"/torch-*.whl
  # As the build does (cmake/AlnTorch.cmake): LibTorch's bundled protobuf headers are never used.
  rm -rf "$dest/torch/include/google"
  touch "$dest/.done"
fi
ours="$PWD/build/torch_include"  # what the build's commands name (cmake/AlnTorch.cmake)
theirs="$PWD/$dest/torch/include"
echo "check_libtorch_api: LibTorch $(grep -o "__version__ = '[^']*'" "$dest/torch/version.py") headers"
[[ -f build/compile_commands.json ]] || { echo "build/compile_commands.json missing: run scripts/build.sh first"; exit 2; }
# One shell command per C++ source that includes LibTorch, its output to /dev/null, syntax only.
.venv/bin/python - "$ours" "$theirs" >"$dest/commands.txt" <<'PY'
import json, shlex, sys
ours, theirs = sys.argv[1], sys.argv[2]
for entry in json.load(open("build/compile_commands.json")):
    command = entry.get("command") or shlex.join(entry["arguments"])
    if ours not in command or entry["file"].endswith(".cu") or "/tests/" in entry["file"] or "/_deps/" in entry["file"]:
        continue
    args = shlex.split(command.replace(ours, theirs))
    if "-o" in args:
        i = args.index("-o")
        del args[i:i + 2]
    print(f"cd {shlex.quote(entry['directory'])} && {shlex.join(args)} -fsyntax-only -w")
PY
total=$(wc -l <"$dest/commands.txt")
echo "check_libtorch_api: $total sources"
failed=0
tr '\n' '\0' <"$dest/commands.txt" | xargs -0 -P 2 -I{} bash -c '{} 2>&1 || echo "CHECK_FAILED: {}"' >"$dest/log.txt" || true
failed=$(grep -c "^CHECK_FAILED" "$dest/log.txt" || true)
grep -E "error|^CHECK_FAILED" "$dest/log.txt" | grep -v "^CHECK_FAILED" | head -40 || true
echo "check_libtorch_api: $((total - failed)) of $total compile against LibTorch $version ($dest/log.txt)"
[[ $failed -eq 0 ]]
