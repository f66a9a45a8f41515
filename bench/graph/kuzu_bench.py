"""kuzu on the graph written by `graph_bench gen`: COPY FROM the CSVs, then the same queries as
the Rust side (same starts and pairs), timed one by one with time.perf_counter() around
connection.execute() and reading the result (so Python call overhead is included: a few µs).

Writes one JSON file in the shape report.py reads (like graph_bench's output)."""

import argparse
import json
import os
import shutil
import time
import warnings

import kuzu

REL = "link"
SP_MAX = 30  # kuzu needs an upper bound for SHORTEST; 30 is its default for var-length

QUERIES = {
    "1hop": f"MATCH (a:Node {{id: $id}})-[:{REL}]->(b:Node) RETURN count(DISTINCT b)",
    # Distinct nodes within 1..3 hops. kuzu's shortest-path recursive join reaches each node
    # once (like a BFS), which is much faster than enumerating var-length walks; both forms are
    # measured (the walk form is the extra row).
    "3hop_out": f"MATCH (a:Node {{id: $id}})-[:{REL}* SHORTEST 1..3]->(b:Node) RETURN count(*)",
    "3hop_both": f"MATCH (a:Node {{id: $id}})-[:{REL}* SHORTEST 1..3]-(b:Node) RETURN count(*)",
    "sp_out": f"MATCH (a:Node {{id: $a}})-[e:{REL}* SHORTEST 1..{SP_MAX}]->(b:Node {{id: $b}}) RETURN length(e)",
    "sp_both": f"MATCH (a:Node {{id: $a}})-[e:{REL}* SHORTEST 1..{SP_MAX}]-(b:Node {{id: $b}}) RETURN length(e)",
    # The plain Cypher form. Var-length patterns use walk semantics, so the start itself can be
    # reached again by a cycle: exclude it, as the other engines do.
    "3hop_out_walk": f"MATCH (a:Node {{id: $id}})-[:{REL}*1..3]->(b:Node) WHERE b.id <> $id RETURN count(DISTINCT b)",
    "3hop_both_walk": f"MATCH (a:Node {{id: $id}})-[:{REL}*1..3]-(b:Node) WHERE b.id <> $id RETURN count(DISTINCT b)",
}


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    rank = min(max(int(-(-p * len(sorted_vals) // 1)), 1), len(sorted_vals))
    return sorted_vals[rank - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per measurement")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per query")
    ap.add_argument("--threads", type=int, default=0, help="kuzu worker threads (0: kuzu's default, all cores)")
    a = ap.parse_args()

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    data = os.path.abspath(a.data)
    starts = [l.strip() for l in open(os.path.join(data, "starts.txt")) if l.strip()]
    pairs = [tuple(l.split()) for l in open(os.path.join(data, "pairs.txt")) if l.strip()]
    meta = json.load(open(os.path.join(data, "meta.json")))
    work = os.path.join(data, "work")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "kuzu.db")
    for p in (path, path + ".wal", path + ".shadow"):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)

    def open_db():
        kw = {"max_num_threads": a.threads} if a.threads else {}
        db = kuzu.Database(path, **kw)
        return db, kuzu.Connection(db)

    print(f"kuzu {kuzu.__version__}: COPY into {path}", flush=True)
    db, conn = open_db()
    conn.execute("CREATE NODE TABLE Node(id STRING, n INT64, PRIMARY KEY (id))")
    conn.execute(f"CREATE REL TABLE {REL}(FROM Node TO Node)")
    t = time.perf_counter()
    conn.execute(f"COPY Node FROM '{os.path.join(data, 'nodes.csv')}' (HEADER=true)")
    nodes_s = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute(f"COPY {REL} FROM '{os.path.join(data, 'edges.csv')}' (HEADER=true)")
    edges_s = time.perf_counter() - t
    n_edges = conn.execute(f"MATCH ()-[e:{REL}]->() RETURN count(e)").get_next()[0]
    if n_edges != meta["edges"]:
        raise SystemExit(f"kuzu holds {n_edges} edges, expected {meta['edges']}")
    print(f"  nodes: {nodes_s:.2f}s ({meta['nodes'] / nodes_s:.0f}/s)  "
          f"edges: {edges_s:.2f}s ({meta['edges'] / edges_s:.0f}/s)", flush=True)
    del conn, db
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(work)
               for f in fs if f.startswith("kuzu.db")) if os.path.isdir(work) else 0

    t = time.perf_counter()
    db, conn = open_db()
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute(QUERIES["1hop"], {"id": starts[0]}).get_next()
    first_query_s = time.perf_counter() - t
    conn.set_query_timeout(int(a.timeout * 1000))

    prepared = {k: conn.prepare(q) for k, q in QUERIES.items()}

    def run(key, params):
        r = conn.execute(prepared[key], params)
        return r.get_next()[0] if r.has_next() else -1

    metrics = {}
    print(f"kuzu queries (per measurement: budget {a.budget}s, timeout {a.timeout}s per query):", flush=True)
    for key, items, mk in [
        ("1hop", starts, lambda s: {"id": s}),
        ("3hop_out", starts, lambda s: {"id": s}),
        ("3hop_both", starts, lambda s: {"id": s}),
        ("sp_out", pairs, lambda p: {"a": p[0], "b": p[1]}),
        ("sp_both", pairs, lambda p: {"a": p[0], "b": p[1]}),
        ("3hop_out_walk", starts, lambda s: {"id": s}),
        ("3hop_both_walk", starts, lambda s: {"id": s}),
    ]:
        for it in items[: a.warm]:
            try:
                run(key, mk(it))
            except RuntimeError:
                pass
        lat = [None] * len(items)
        answers = [None] * len(items)
        timeouts, errors, budget_hit = 0, [], False
        began = time.perf_counter()
        for i, it in enumerate(items):
            if time.perf_counter() - began > a.budget:
                budget_hit = True
                break
            t = time.perf_counter()
            try:
                v = run(key, mk(it))
            except RuntimeError as e:
                if "interrupt" in str(e).lower() or "timeout" in str(e).lower():
                    timeouts += 1
                else:
                    errors.append(str(e))
                continue
            lat[i] = (time.perf_counter() - t) * 1e6
            answers[i] = int(v)
        done = sorted([x for x in lat if x is not None] + [a.timeout * 1e6] * timeouts)
        m = {
            "n": sum(x is not None for x in lat), "attempted": sum(x is not None for x in lat) + timeouts + len(errors),
            "p50_us": pct(done, 0.5), "p99_us": pct(done, 0.99),
            "mean_us": sum(done) / len(done) if done else None, "max_us": pct(done, 1.0),
            "timeouts": timeouts, "timeout_s": a.timeout, "errors": len(errors),
            "first_error": errors[0] if errors else None, "budget_hit": budget_hit,
            "answers": answers, "lat_us": lat,
        }
        metrics[key] = m
        p50 = m["p50_us"] if m["p50_us"] is not None else float("nan")
        p99 = m["p99_us"] if m["p99_us"] is not None else float("nan")
        print(f"  {key:<28} n={m['n']:<5} p50={p50:>10.1f}us p99={p99:>10.1f}us "
              f"timeouts={timeouts} errors={len(errors)}{' (budget spent)' if budget_hit else ''}", flush=True)

    walk = {k[: -len("_walk")]: metrics.pop(k) for k in list(metrics) if k.endswith("_walk")}
    name = f"kuzu {kuzu.__version__} (Python, {a.threads or os.cpu_count()} threads)"
    out = {"rows": [{
        "engine": name, "key": "kuzu",
        "ingest": {"nodes": meta["nodes"], "edges": meta["edges"], "nodes_s": nodes_s, "edges_s": edges_s,
                   "nodes_per_s": meta["nodes"] / nodes_s, "edges_per_s": meta["edges"] / edges_s,
                   "file_bytes": size, "how": "COPY FROM CSV"},
        "open": {"open_s": open_s, "first_query_s": first_query_s},
        "metrics": metrics, "queries": QUERIES,
    }, {
        "engine": "kuzu, k-hop as plain var-length *1..3 + count(DISTINCT)", "key": "kuzu_walk",
        "metrics": walk,
    }]}
    with open(a.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
