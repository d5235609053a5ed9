#!/usr/bin/env bash
# The serving figures of BENCHMARKS.md ("Serving a prepared model"): kiln
# serves a pipeline on loopback and wrk drives it (1 thread, 32 connections,
# 10 s; one row per request), then the same for the FastAPI + PyTorch peer
# (../shared/peers/serve_bench.sh, when its venv exists).
#
#   benches/serve_wrk.sh [PIPELINE] [INPUT_NODE] [COLUMNS] [CONNECTIONS]
#   default: pipelines/digits-mlp.yaml request 64 32 (the peer's model size)
#   DURATION=10 (seconds), PEER=0 skips the peer, KILN=path/to/kiln and
#   KILN_SERVE_ARGS="--jobs 1" change what is served.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pipeline="${1:-pipelines/digits-mlp.yaml}"
input="${2:-request}"
columns="${3:-64}"
connections="${4:-32}"
duration="${DURATION:-10}"
command -v wrk >/dev/null || { echo "serve_wrk: needs wrk (apt-get install wrk)" >&2; exit 2; }
kiln="${KILN:-$here/target/release/kiln}"
[[ -x "$kiln" ]] || cargo build --release --manifest-path "$here/Cargo.toml"
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
name="$(grep -m1 '^pipeline:' "$here/$pipeline" | awk '{print $2}')"
python3 - "$input" "$columns" > "$work/body.json" <<'PY'
import json, random, sys
random.seed(0)
print(json.dumps({"inputs": {sys.argv[1]: [[round(random.uniform(0, 16), 4) for _ in range(int(sys.argv[2]))]]}}))
PY
cat > "$work/post.lua" <<LUA
local f = io.open("$work/body.json", "r"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "application/json"
LUA
"$kiln" run "$here/$pipeline" --out "$work/run" >/dev/null   # train (or take from the cache) first
"$kiln" serve "$here/$pipeline" --addr 127.0.0.1:8078 ${KILN_SERVE_ARGS:-} > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -X POST -d @"$work/body.json" "http://127.0.0.1:8078/v1/pipelines/$name/infer" && break
    sleep 0.1
done
echo "== kiln serve $pipeline: sample answer"
curl -s -X POST -d @"$work/body.json" "http://127.0.0.1:8078/v1/pipelines/$name/infer"; echo
wrk -t1 -c"$connections" -d2s -s "$work/post.lua" "http://127.0.0.1:8078/v1/pipelines/$name/infer" >/dev/null  # warm-up
echo "== wrk -t1 -c$connections -d${duration}s --latency (kiln)"
wrk -t1 -c"$connections" -d"${duration}s" --timeout 5s --latency -s "$work/post.lua" "http://127.0.0.1:8078/v1/pipelines/$name/infer" | tee "$work/wrk.txt"
# wrk counts error answers as requests: a figure made of them is no figure.
if grep -q "Non-2xx" "$work/wrk.txt"; then
    echo "serve_wrk: kiln answered with errors (see the sample answer above); these figures are not valid" >&2
    exit 1
fi
kill "$server"; wait "$server" 2>/dev/null || true
peers="$here/../shared/peers/serve_bench.sh"
if [[ "${PEER:-1}" == 1 && -f "$peers" && -d "${PEERS_VENV:-$HOME/.cache/kiln-peers/venv}" ]]; then
    echo "== the peer: $peers $duration"
    bash "$peers" "$duration"
else
    echo "== the peer was not run (PEER=0, or no ../shared/peers/serve_bench.sh and its venv)"
fi
