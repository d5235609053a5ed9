#!/usr/bin/env bash
# A newcomer's path, as CI runs it: clone the repository into an empty folder
# outside this checkout (nothing beside it), then run the README's two
# commands exactly as the README writes them (read from its "Two commands"
# section, so the README cannot drift from what is tested). Data the tests
# need is fetched by the tests themselves into the kiln data folder.
#
#   scripts/newcomer.sh            the committed HEAD of this checkout
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# Nothing a user needs may point outside the repository.
if grep -rn "shared/" pipelines tests src engine nodes; then
    echo "newcomer: the files above refer to a folder outside the repository" >&2
    exit 1
fi

mapfile -t commands < <(awk '
    /^## / { inside = ($0 == "## Two commands") }
    inside && /^```/ { fenced = !fenced; next }
    inside && fenced && NF { print }
' README.md | head -n 2)
if [[ ${#commands[@]} -ne 2 ]]; then
    echo "newcomer: README.md's \"Two commands\" section should hold two commands" >&2
    exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kiln-newcomer.XXXXXX")"
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/kiln"
cd "$work/kiln"
for c in "${commands[@]}"; do
    echo "newcomer: \$ $c"
    start=$SECONDS
    bash -c "$c"
    echo "newcomer: '$c' passed in $((SECONDS - start)) s"
done
