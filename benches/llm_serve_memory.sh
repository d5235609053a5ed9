#!/usr/bin/env bash
# Resident set of `kiln serve pipelines/chat-smollm2.yaml` idle and while
# eight clients (CLIENTS) each ask for a 512-token chat at once (continuous batching),
# against issue #21's bound: twice the GGUF plus the key/value caches.
#
#   bash benches/llm_serve_memory.sh            (BENCHMARKS.md, "Language models")
#   CLIENTS=1 bash benches/llm_serve_memory.sh  (the single stream, for the ratio)
#   KILN_BIN=/tmp/kiln-old bash benches/llm_serve_memory.sh  (another build)
#
# Prints the idle and peak resident set (VmHWM covers loading too), the
# tokens generated, the seconds, and the bound for the positions reached.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
port=${PORT:-8191}
clients=${CLIENTS:-8}
out=$(mktemp -d)
"${KILN_BIN:-target/release/kiln}" serve pipelines/chat-smollm2.yaml --addr "127.0.0.1:$port" >"$out/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 1 120); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
sleep 1
echo "idle: $(awk '/VmRSS/ {print $2 / 1024 " MiB"}' /proc/$pid/status)"
start=$(date +%s.%N)
for i in $(seq 1 "$clients"); do
  curl -s "127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' -d "{\"model\":\"chat-smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"Write a very long story, at least two thousand words, about dragon number $i and a lost city.\"}],\"max_tokens\":512,\"temperature\":0.7,\"seed\":$i}" >"$out/chat$i.json" &
done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
end=$(date +%s.%N)
peak_kib=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
gguf=$(stat -c %s "${KILN_DATA:-$HOME/.cache/kiln/data}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
python3 - "$out" "$start" "$end" "$peak_kib" "$gguf" "$clients" <<'PY'
import json, sys
out, start, end, peak_kib, gguf, clients = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
usage = [json.load(open(f"{out}/chat{i}.json"))["usage"] for i in range(1, clients + 1)]
tokens = sum(u["completion_tokens"] for u in usage)
positions = sum(u["total_tokens"] for u in usage)
# SmolLM2-135M: 30 layers, keys and values of 3 heads × 64 in f16.
kv = positions * 30 * 2 * 192 * 2
mib = 1 << 20
print(f"{tokens} tokens in {end - start:.1f} s ({tokens / (end - start):.0f} tokens/s), {positions} positions")
print(f"peak: {peak_kib / 1024:.1f} MiB; bound 2 x GGUF + KV = 2 x {gguf / mib:.1f} + {kv / mib:.1f} = {(2 * gguf + kv) / mib:.1f} MiB")
PY
