#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU: builds kiln with CUDA
# (release, for this GPU's compute capability), runs the tests that compare
# every architecture (the language model too) on the GPU with the CPU and a
# mixed cpu/cuda pipeline with the all-CPU run (they fail here, rather than
# skip, when no GPU answers), then times the LeNet-300-100 on MNIST and the
# digits CNN training, and MiniLM embeddings, on the GPU and on the CPU.
# Prints a short report to paste into BENCHMARKS.md.
#
#   scripts/gpu-check.sh            data from the kiln data folder, fetched
#                                   by scripts/fetch-data.sh if missing
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no GPU answers (nvidia-smi); nothing to check here" >&2
    exit 2
fi
gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)"
export CUDA_COMPUTE_CAP="$cap"
export KILN_CUDA_LINK=1
# shellcheck source=scripts/cuda-toolkit.sh
source scripts/cuda-toolkit.sh

echo "gpu-check: building with --features cuda for sm_$cap" >&2
cargo build --release --features cuda
export KILN_REQUIRE_GPU=1
cargo test --release --features cuda -p kiln-nodes -- on_devices agree_on_every_device the_gpu_path 2>&1 |
    tee /tmp/kiln-gpu-tests.log | grep -E "^test |test result"
# A pipeline trained on the GPU beside CPU preprocessing, through the binary.
cargo test --release --features cuda --test main -- devices:: 2>&1 |
    tee -a /tmp/kiln-gpu-tests.log | grep -E "^test |test result"

kiln=target/release/kiln
scripts/fetch-data.sh >/dev/null
work="$(mktemp -d "${TMPDIR:-/tmp}/kiln-gpu.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Seconds one node of a pipeline took and where it ran (run.json), with
# the whole pipeline placed on `device` (a copy beside it, so its data paths
# hold) and results and cache in a fresh folder.
node_seconds() {
    local pipeline="$1" node="$2" device="$3"
    local out="$work/$device-${pipeline%.yaml}" copy="pipelines/.gpu-check-$device-$pipeline"
    { echo "device: $device"; grep -v '^device:' "pipelines/$pipeline"; } >"$copy"
    "$kiln" run "$copy" --out "$out" --cache "$out/cache" >/dev/null || { rm -f "$copy"; return 1; }
    rm -f "$copy"
    python3 - "$out/run.json" "$node" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))
node = next(n for n in run["nodes"] if n["id"] == sys.argv[2])
print(f'{node["seconds"]:.2f} {node["device"]}')
EOF
}

report() {
    local what="$1" pipeline="$2" node="$3"
    local cpu gpu
    cpu="$(node_seconds "$pipeline" "$node" cpu)"
    gpu="$(node_seconds "$pipeline" "$node" cuda)"
    python3 - "$what" "$cpu" "$gpu" <<'EOF'
import sys
what, (cpu, cd), (gpu, gd) = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
print(f"| {what} | {float(cpu):.2f} s ({cd}) | {float(gpu):.2f} s ({gd}) | {float(cpu) / float(gpu):.1f}x |")
EOF
}

echo
echo "## GPU check: $gpu, sm_$cap, $(date -u +%Y-%m-%d)"
echo
echo "| work | CPU | GPU | GPU speed-up |"
echo "|---|---|---|---|"
report "MNIST LeNet-300-100 training" mnist-mlp.yaml fit
report "digits CNN training" digits-cnn.yaml fit
report "MiniLM embeddings, reviews training split" reviews-minilm.yaml embed_train
echo
grep -E "test result" /tmp/kiln-gpu-tests.log | sed 's/^/CPU-vs-GPU agreement tests: /'
