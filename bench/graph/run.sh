#!/usr/bin/env bash
# PluresDB's graph queries next to SQLite's recursive CTE and kuzu on one seeded power-law graph.
#   bench/graph/run.sh [--nodes 100000] [--edges 1000000] [--queries 1000] [--seed 42]
#                      [--budget 60] [--timeout 10] [--kuzu-threads 0] [--engines pluresdb,raw,sqlite,kuzu]
# --budget: seconds per measurement for the slow peers (SQLite CTE, kuzu); --timeout: seconds per
# query for them. See bench/graph/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

nodes=100000 edges=1000000 queries=1000 seed=42 budget=60 timeout=10 kuzu_threads=0
engines=pluresdb,raw,sqlite,kuzu
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --edges) edges="$2"; shift 2 ;;
        --queries) queries="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --budget) budget="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --kuzu-threads) kuzu_threads="$2"; shift 2 ;;
        --engines) engines="$2"; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
has() { [[ ",$engines," == *",$1,"* ]]; }

# The Python side: a venv with the pinned kuzu, refreshed when requirements.txt changes.
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
    echo "setting up $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements.txt"
fi
py="$venv/bin/python"

# The Rust side, in release mode (honours CARGO_TARGET_DIR).
(cd "$root" && cargo build --quiet --release -p pluresdb-bench --bin graph_bench)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | "$py" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/release/graph_bench"

# The graph is generated once per size and seed, and shared by every engine.
data="$here/data/n${nodes}-e${edges}-q${queries}-s${seed}"
if [ ! -f "$data/meta.json" ]; then
    "$bin" gen --data "$data" --nodes "$nodes" --edges "$edges" --queries "$queries" --seed "$seed"
fi
results="$data/results"
mkdir -p "$results"
rm -f "$results"/*.json

has pluresdb && "$bin" pluresdb --data "$data" --out "$results/pluresdb.json"
has raw && "$bin" raw --data "$data" --out "$results/raw.json"
has sqlite && "$bin" sqlite --data "$data" --out "$results/sqlite.json" --budget "$budget" --timeout "$timeout"
has kuzu && "$py" "$here/kuzu_bench.py" --data "$data" --out "$results/kuzu.json" \
    --budget "$budget" --timeout "$timeout" --threads "$kuzu_threads"
rm -rf "$data/work"   # the databases (about 1 GB at full size); the CSVs stay for the next run

echo >&2
"$py" "$here/report.py" --data "$data" "$results"/*.json
echo "(also written to $data/report.md)" >&2
