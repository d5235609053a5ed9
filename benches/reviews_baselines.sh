#!/usr/bin/env bash
# Fit time of the text baselines of pipelines/reviews-tfidf.yaml against
# scikit-learn on the same reviews (BENCHMARKS.md, "Classical baselines").
#
#   bash benches/reviews_baselines.sh [PYTHON]
#
# kiln: best of 5 uncached runs of each baseline's nodes (the seconds
# run.json records: tf-idf or counts fitted on the 3 893 training reviews
# and applied to the 973 test reviews, then the model fitted). The peer:
# benches/peers/reviews_sklearn.py (vectorizer fit_transform + model fit,
# best of 5) on the split kiln writes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
kiln=target/release/kiln
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
best() { # node... : best of 5 of the summed seconds of these nodes
  local until=$1; shift
  for _ in 1 2 3 4 5; do
    $kiln run pipelines/reviews-tfidf.yaml --until "$until" --no-cache --out "$out/run" >/dev/null 2>&1
    python3 - "$out/run/run.json" "$@" <<'PY'
import json, sys
nodes = {n["id"]: n for n in json.load(open(sys.argv[1]))["nodes"]}
print(sum(nodes[k]["seconds"] for k in sys.argv[2:]))
PY
  done | sort -g | head -1
}
echo "kiln tf-idf 1-2-grams + logistic regression: $(best fit_logistic tfidf fit_logistic) s"
echo "kiln 1-2-gram counts + naive Bayes:           $(best fit_bayes counts fit_bayes) s"
$kiln run benches/peers/reviews_split.yaml --out "$out/split" >/dev/null
"$python" benches/peers/reviews_sklearn.py "$out/split"
