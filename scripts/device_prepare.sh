#!/usr/bin/env bash
# Run here (Debian 12, with the package index reachable), before a GPU session: fetches what the GPU
# machine's image lacks and Aln's build needs (abseil, prometheus-cpp with civetweb, zlib's headers; gRPC and
# SQLite are only the launcher's, which that build leaves out) as Debian packages, unpacked into
# .device/prefix (ignored by git, carried to the machine with the working tree: the device tool's
# `carry: [".device"]`). Debian 12's binaries run on the machine's newer glibc. Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
packages=(libabsl-dev libabsl20220623 prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
          libprometheus-cpp-push1.0
          libcivetweb1 libcivetweb-dev civetweb zlib1g-dev zlib1g)
dest=.device/prefix
# The peer of bench/gpu_dpo_step.py (TRL's DPOTrainer, with Liger's kernels) and what the machine's
# Python lacks of it, as wheels for its Python 3.12 (all pure Python) in .device/whl; the device check
# installs them into a temporary folder there. The versions DEVICE.md's anchors were measured with.
peer_wheels=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel==0.8.5)
fetch_peer_wheels() {
  if [[ -f .device/whl/.done ]] && [[ "$(cat .device/whl/.done)" == "${peer_wheels[*]}" ]]; then return; fi
  rm -rf .device/whl && mkdir -p .device/whl
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 -d .device/whl "${peer_wheels[@]}"
  echo "${peer_wheels[*]}" >.device/whl/.done
  echo "device_prepare: ${#peer_wheels[@]} peer wheels in .device/whl ($(du -sh .device/whl | cut -f1))"
}
if [[ -f $dest/.done ]] && [[ "$(cat "$dest/.done")" == "${packages[*]}" ]]; then
  fetch_peer_wheels
  echo "device_prepare: $dest is ready ($(du -sh .device | cut -f1))"; exit 0
fi
rm -rf .device && mkdir -p .device/debs "$dest"
(cd .device/debs && apt-get download "${packages[@]}")
for deb in .device/debs/*.deb; do dpkg -x "$deb" "$dest"; done
rm -rf .device/debs "$dest/usr/share/doc" "$dest/usr/share/lintian"
# Aln uses prometheus-cpp's pull (the /metrics endpoint), never push: its config's search for curl's
# headers (absent there) is switched off.
sed -i 's/^if(PROMETHEUS_CPP_ENABLE_PUSH)/if(FALSE)  # push is not used (scripts\/device_prepare.sh)/' \
  "$dest/usr/lib/x86_64-linux-gnu/cmake/prometheus-cpp/prometheus-cpp-config.cmake"
# Links that name absolute paths (zlib's libz.so -> /lib/...) point into the prefix instead: the
# machine's own files have other versions, or are not there.
find "$dest" -type l | while read -r link; do
  target="$(readlink "$link")"
  if [[ $target == /* && -e "$dest$target" ]]; then
    ln -sfn "$(realpath --relative-to="$(dirname "$link")" "$dest$target")" "$link"
  fi
done
echo "${packages[*]}" >"$dest/.done"
echo "device_prepare: unpacked ${#packages[@]} packages into $dest ($(du -sh .device | cut -f1); the carry limit is 64 MiB with the tree)"
fetch_peer_wheels
