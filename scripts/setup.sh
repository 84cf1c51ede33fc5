#!/usr/bin/env bash
# Installs everything Aln needs, idempotently: a second run checks and skips.
#   - Debian packages (compilers, gRPC, protobuf, abseil, prometheus-cpp, Open MPI, yaml-cpp, SQLite,
#     GoogleTest, Google Benchmark, ccache, the Prometheus server)
#   - .venv: the pinned PyTorch wheel (its LibTorch is what we link) and the Python oracles
#     (transformers, tokenizers, safetensors, trl, numpy), from scripts/requirements.lock
# Environment: ALN_VENV (default <repo>/.venv), ALN_SKIP_APT=1 to skip the Debian step.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ALN_VENV:-$ROOT/.venv}"
LOCK="$ROOT/scripts/requirements.lock"
say() { printf '[setup] %s\n' "$*"; }

APT_PACKAGES=(
  build-essential cmake ninja-build ccache git pkg-config python3 python3-venv python3-pip
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libopenmpi-dev openmpi-bin libyaml-cpp-dev libsqlite3-dev sqlite3 zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev clang libclang-rt-14-dev prometheus iproute2 curl
  procps  # pgrep/pkill in the multi-rank tests; absent from minimal Debian images
  openssl  # the launcher TLS test makes a throwaway certificate
  g++-aarch64-linux-gnu  # aarch64_compile_check: core/model builds for aarch64 (compile only)
)

start=$(date +%s)
if [[ "${ALN_SKIP_APT:-0}" != "1" ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != "installed" ]]; then missing+=("$p"); fi
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "Debian packages: all ${#APT_PACKAGES[@]} present"
  fi
fi

# The Prometheus package starts a system service; tests start their own servers on loopback.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus >/dev/null 2>&1 || true
fi

PY="${ALN_PYTHON:-python3}"
stamp="$VENV/.aln-lock-sha256"
want="$(sha256sum "$LOCK" | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  say "Python environment $VENV: up to date"
else
  say "creating Python environment $VENV (PyTorch wheel with its LibTorch, transformers, tokenizers, trl, ...)"
  [[ -d "$VENV" ]] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$LOCK"
  echo "$want" >"$stamp"
fi
say "done in $(( $(date +%s) - start )) s"
