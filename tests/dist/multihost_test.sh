#!/usr/bin/env bash
# Two "hosts" on one machine: two network namespaces joined by a veth pair (made here, removed on
# exit). mpirun runs in the first with a host list of both addresses; for the second it starts Open
# MPI's daemon through a launch agent that enters the other namespace (where ssh would reach another
# machine), so the daemon connects back over the veth like a remote one. Data-parallel DPO on 2 ranks,
# one per namespace, every byte between them over TCP on the veth: it must end with the same
# parameters as one process with 2-fold accumulation (deterministic mode: bit for bit).
# Skips (exit 77) with a message where namespaces cannot be created (no root or no CAP_NET_ADMIN).
# Usage: multihost_test.sh ALN MPIEXEC
set -uo pipefail
ALN="$(realpath "$1")"; MPIEXEC="$2"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
work="$(mktemp -d)"; tag="aln$$"; net="10.231.$((RANDOM % 200 + 20))"
nsA="${tag}a"; nsB="${tag}b"
cleanup() { ip netns del "$nsA" 2>/dev/null; ip netns del "$nsB" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if ! ip netns add "$nsA" 2>"$work/netns.err"; then
  echo "SKIP: cannot create network namespaces here ($(cat "$work/netns.err")); run as root or with CAP_NET_ADMIN"
  exit 77
fi
set -e
ip netns add "$nsB"
ip link add "${tag}x" type veth peer name "${tag}y"
ip link set "${tag}x" netns "$nsA"; ip link set "${tag}y" netns "$nsB"
ip -n "$nsA" addr add "$net.1/24" dev "${tag}x"; ip -n "$nsB" addr add "$net.2/24" dev "${tag}y"
for ns in "$nsA" "$nsB"; do ip -n "$ns" link set lo up; done
ip -n "$nsA" link set "${tag}x" up; ip -n "$nsB" link set "${tag}y" up
set +e
# The launch agent: mpirun calls it as `agent [options] HOST COMMAND...` (as it would call ssh).
cat >"$work/agent.sh" <<AGENT
#!/bin/sh
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host="\$1"; shift
case "\$host" in $net.2) ns=$nsB ;; *) ns=$nsA ;; esac
echo "\$host -> \$ns" >>"$work/agent.log"
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$work/agent.sh"

failures=0; passed=0
check() { if eval "$2"; then passed=$((passed + 1)); else echo "FAIL: $1"; failures=$((failures + 1)); fi; }
job() {  # job NAME DP ACCUM
  cat <<YAML
name: multihost
output_dir: $work/$1
seed: 3
model:
  tokenizer: examples/data/tokenizers/gpt2/tokenizer.json
  chat_format: hh
  config: {architecture: llama, vocab_size: 50257, hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 64, max_position: 256}
trainer: {dpo: {}}
data:
  train: [{path: examples/data/xstest/xstest_pairs_shared.jsonl, format: saferlhf, limit: 96}]
  max_prompt_length: 40
  max_response_length: 24
  bad_records: skip
optimizer: {lr: 2e-3, max_steps: 10, micro_batch_size: 2, gradient_accumulation: $3, warmup_steps: 2}
parallel: {policy: {data_parallel: $2}, deterministic: true, timeout_s: 60}
metrics: {enabled: false, progress_bar: false}
runtime: {threads: 1}
YAML
}
job one 1 2 >"$work/one.yaml"
"$ALN" train "$work/one.yaml" >"$work/one.out" 2>&1; rc=$?
check "one process exits 0 (rc $rc)" '[[ $rc -eq 0 ]]'
job two 2 1 >"$work/two.yaml"
timeout 300 ip netns exec "$nsA" "$MPIEXEC" --allow-run-as-root --oversubscribe --bind-to none \
  --mca plm_rsh_agent "$work/agent.sh" --host "$net.1:1,$net.2:1" -np 2 \
  --mca btl self,tcp --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
  -x OMP_NUM_THREADS=1 "$ALN" train "$work/two.yaml" >"$work/two.out" 2>&1; rc=$?
check "2 ranks in 2 namespaces exit 0 (rc $rc): $(tail -3 "$work/two.out")" '[[ $rc -eq 0 ]]'
check "the second host's daemon was started inside the other namespace ($(cat "$work/agent.log" 2>/dev/null))" \
  'grep -q "$net.2 -> $nsB" "$work/agent.log"'
check "the final parameters equal one process with 2-fold accumulation, bit for bit" \
  'cmp -s "$work/one/final/model.safetensors" "$work/two/final/model.safetensors"'
echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
