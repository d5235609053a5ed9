#!/usr/bin/env bash
# A 12-trial sweep of mnist-mlp.yaml varying only training settings
# (lr × batch size × epochs), against the same 12 trials as plain runs
# without a cache (each loading, splitting and scaling MNIST again).
#
#   cargo build --release && bash benches/mnist_sweep.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kiln="$root/target/release/kiln"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# mnist-mlp.yaml with its training settings as params, and the sweep block.
sed -e 's/^  epochs: 12$/  epochs: 1\n  lr: 0.001\n  batch: 128/' \
    -e 's/lr: 0.001, epochs: "${params.epochs}", batch_size: 128/lr: "${params.lr}", epochs: "${params.epochs}", batch_size: "${params.batch}"/' \
    "$root/pipelines/mnist-mlp.yaml" > "$work/mnist-sweep.yaml"
cat >> "$work/mnist-sweep.yaml" <<'YAML'
sweep:
  method: grid
  params: { lr: [0.0005, 0.001, 0.002], batch: [64, 128], epochs: [1, 2] }
  metric: eval.metrics.accuracy
  parallel: 1
YAML
grep -q 'batch_size: "${params.batch}"' "$work/mnist-sweep.yaml"

start=$(date +%s.%N)
"$kiln" sweep "$work/mnist-sweep.yaml" --out "$work/sweep" > "$work/sweep.log"
sweep=$(echo "$(date +%s.%N) - $start" | bc)

start=$(date +%s.%N)
for lr in 0.0005 0.001 0.002; do for batch in 64 128; do for epochs in 1 2; do
  "$kiln" run "$work/mnist-sweep.yaml" --no-cache --out "$work/plain" \
    --set params.lr=$lr --set params.batch=$batch --set params.epochs=$epochs > /dev/null
done; done; done
plain=$(echo "$(date +%s.%N) - $start" | bc)

tail -n 17 "$work/sweep.log"
printf 'kiln sweep, 12 trials:             %.1f s\n' "$sweep"
printf '12 plain runs without a cache:     %.1f s\n' "$plain"
printf 'ratio:                             %.2fx\n' "$(echo "$plain / $sweep" | bc -l)"
