#!/usr/bin/env bash
# PluresDB's HNSW index vs hnswlib, usearch and faiss on the same data. All flags go to run.py:
#   bench/vector/run.sh [--n 100000] [--dim 128] [--queries 1000] [--dataset clusters|words|file:PATH.f32]
# (see bench/vector/README.md, or run.sh --help).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

# The Python side: a venv with the pinned peers, refreshed when requirements.txt changes.
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
    echo "setting up $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements.txt"
fi

# The Rust side: our index and the word embedder, built in release mode (honours CARGO_TARGET_DIR).
(cd "$root" && cargo build --quiet --release -p pluresdb-bench --bin vector_bench --bin embed_words)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

exec "$venv/bin/python" "$here/run.py" --bin "$target/release/vector_bench" \
    --embed-bin "$target/release/embed_words" "$@"
