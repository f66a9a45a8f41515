"""Puts the engine results of one run (JSON files written by graph_bench and kuzu_bench.py) in
Markdown tables: latencies, ratios against SQLite's recursive CTE, the goals, and whether the
engines agree on every answer. Prints the report and writes it to DATA/report.md."""

import argparse
import json
import os
import platform

METRICS = [
    ("1hop", "1-hop p50 / p99"),
    ("3hop_out", "3-hop out p50 / p99"),
    ("3hop_both", "3-hop both p50 / p99"),
    ("sp_out", "shortest path out p50 / p99"),
    ("sp_both", "shortest path both p50 / p99"),
]
REFERENCE = "pluresdb_api"
CTE = "sqlite_cte"
GOALS = {"p50_us": 1000.0, "p99_us": 10000.0, "cte_ratio": 10.0, "edges_per_s": 500_000.0}


def t(us):
    if us is None:
        return "–"
    if us < 100:
        return f"{us:.1f} µs"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1e6:.2f} s"


def secs(s):
    return t(s * 1e6) if s is not None else "–"


def rate(x):
    if x is None:
        return "–"
    return f"{x / 1e6:.2f}M/s" if x >= 1e6 else f"{x / 1e3:.0f}K/s"


def x(r):
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 1 else f"{r:.2f}x"


def pct(vals, p):
    vals = sorted(vals)
    if not vals:
        return None
    rank = min(max(int(-(-p * len(vals) // 1)), 1), len(vals))
    return vals[rank - 1]


def cell(m):
    if not m or not m.get("n"):
        if m and m.get("timeouts"):
            return f"all {m['timeouts']} timed out (> {m['timeout_s']:.0f} s)"
        return "–"
    s = f"{t(m['p50_us'])} / {'≥ ' if m['timeouts'] else ''}{t(m['p99_us'])}"
    notes = []
    total = len(m["answers"])
    if m["n"] < total:
        notes.append(f"n={m['n']}/{total}")
    if m["timeouts"]:
        notes.append(f"{m['timeouts']} timeouts")
    if m["errors"]:
        notes.append(f"{m['errors']} errors")
    return s + (f" ({', '.join(notes)})" if notes else "")


def open_cell(row):
    o = row.get("open")
    if not o:
        return "–"
    if "build_s" in o:
        return f"build {secs(o['build_s'])} (from memory)"
    return f"open {secs(o['open_s'])} + first query {secs(o['first_query_s'])}"


def common(a, b):
    """Latencies of the queries both answered."""
    idx = [i for i, (x, y) in enumerate(zip(a["lat_us"], b["lat_us"])) if x is not None and y is not None]
    return [a["lat_us"][i] for i in idx], [b["lat_us"][i] for i in idx]


def ratio(cte_m, m, p):
    if not cte_m or not m:
        return None, 0
    c, e = common(cte_m, m)
    if not c:
        return None, 0
    return pct(c, p) / pct(e, p), len(c)


def agree(key, ref, other, sp_cap):
    """True when `other` is a right answer given the reference; a path engine that searches
    at most `sp_cap` hops may say 'none' (-1) for a longer path."""
    if ref == other:
        return True
    return key.startswith("sp") and sp_cap is not None and other == -1 and (ref > sp_cap)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("results", nargs="+", help="JSON result files")
    a = ap.parse_args()
    meta = json.load(open(os.path.join(a.data, "meta.json")))
    rows, extra = [], {}
    for f in a.results:
        if not os.path.exists(f):
            continue
        j = json.load(open(f))
        rows.extend(j["rows"])
        if "live_handle" in j:
            extra["live_handle"] = j["live_handle"]
    by = {r["key"]: r for r in rows}
    order = ["pluresdb_api", "pluresdb_sql", "raw", "sqlite_cte", "kuzu", "kuzu_walk"]
    rows = [by[k] for k in order if k in by] + [r for r in rows if r["key"] not in order]

    out = []
    p = out.append
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    p(f"## Graph benchmark: {meta['nodes']:,} nodes, {meta['edges']:,} edges, {meta['queries']} queries (seed {meta['seed']})\n")
    p(f"Graph: {meta['model']}. Out-degree p50/p99/max {meta['out_degree']['p50']}/{meta['out_degree']['p99']}/"
      f"{meta['out_degree']['max']}; in-degree p50/p99/max {meta['in_degree']['p50']}/{meta['in_degree']['p99']}/"
      f"{meta['in_degree']['max']} ({meta['in_degree']['zero']} nodes without in-edges). "
      f"Machine: {os.cpu_count()} cores ({cpu}), shared, load average {os.getloadavg()[0]:.1f} at report time.\n")
    p("Latencies are per query (each timed alone, one thread for PluresDB and SQLite), p50 / p99 over the same "
      "seeded starts (k-hop) and random pairs (shortest path) for every engine. `n=a/b`: only `a` queries ran before "
      "the time budget was spent; timed-out queries count at the timeout, so their p99 is a lower bound (≥).\n")
    p("| engine | ingest edges/s | " + " | ".join(h for _, h in METRICS) + " | open / adjacency build |")
    p("|---|---|" + "---|" * len(METRICS) + "---|")
    for r in rows:
        ing = r.get("ingest")
        ing_s = rate(ing["edges_per_s"]) if ing else "–"
        p(f"| {r['engine']} | {ing_s} | " + " | ".join(cell(r["metrics"].get(k)) for k, _ in METRICS)
          + f" | {open_cell(r)} |")
    p("")

    cte = by.get(CTE)
    if cte:
        p("### Speed-up against the SQLite recursive CTE (CTE latency / engine latency, p50 (p99), over the queries both answered)\n")
        p("| engine | " + " | ".join(h.replace(" p50 / p99", "") for _, h in METRICS) + " |")
        p("|---|" + "---|" * len(METRICS))
        for r in rows:
            if r["key"] == CTE:
                continue
            cells = []
            for k, _ in METRICS:
                r50, n = ratio(cte["metrics"].get(k), r["metrics"].get(k), 0.5)
                r99, _ = ratio(cte["metrics"].get(k), r["metrics"].get(k), 0.99)
                cells.append("–" if r50 is None else f"{x(r50)} ({x(r99)}), n={n}")
            p(f"| {r['engine']} | " + " | ".join(cells) + " |")
        p("")

    api = by.get(REFERENCE)
    if api:
        p("### Goals (PluresDB through the Rust API; the SQL table functions in brackets)\n")
        p("| goal | measured | met? |")
        p("|---|---|---|")
        sql = by.get("pluresdb_sql", {"metrics": {}})

        def goal(name, v, ok, v2=None):
            p(f"| {name} | {v}{f' [{v2}]' if v2 else ''} | {'met' if ok else '**not met**'} |")

        for k, label in [("3hop_out", "out"), ("3hop_both", "both")]:
            m, ms = api["metrics"][k], sql["metrics"].get(k, {})
            goal(f"3-hop ({label}) p50 < 1 ms", t(m["p50_us"]), m["p50_us"] < GOALS["p50_us"], t(ms.get("p50_us")))
            goal(f"3-hop ({label}) p99 < 10 ms", t(m["p99_us"]), m["p99_us"] < GOALS["p99_us"], t(ms.get("p99_us")))
        if cte:
            for k, label in [("3hop_out", "3-hop out"), ("3hop_both", "3-hop both"), ("sp_out", "shortest path out"),
                             ("sp_both", "shortest path both")]:
                r50, n = ratio(cte["metrics"].get(k), api["metrics"].get(k), 0.5)
                r99, _ = ratio(cte["metrics"].get(k), api["metrics"].get(k), 0.99)
                if r50 is None:
                    continue
                goal(f"≥ 10x faster than the CTE: {label} (p50, p99; n={n})", f"{x(r50)}, {x(r99)}",
                     min(r50, r99) >= GOALS["cte_ratio"])
        eps = api["ingest"]["edges_per_s"]
        goal("ingest ≥ 500K edges/s (link_many, one transaction)", rate(eps), eps >= GOALS["edges_per_s"])
        p("")

        p("### Correctness (answers compared with PluresDB's Rust API, query by query)\n")
        ref = api["metrics"]
        lines = []
        for r in rows:
            if r["key"] == REFERENCE:
                continue
            cap = r.get("sp_max_depth") or (30 if r["key"].startswith("kuzu") else None)
            for k, m in r["metrics"].items():
                if k not in ref:
                    continue
                pairs = [(i, x, y) for i, (x, y) in enumerate(zip(ref[k]["answers"], m["answers"]))
                         if x is not None and y is not None]
                bad = [(i, x, y) for i, x, y in pairs if not agree(k, x, y, cap)]
                capped = sum(1 for i, x, y in pairs if x != y and agree(k, x, y, cap))
                note = f" ({capped} longer than the engine's {cap}-hop cap, reported as none)" if capped else ""
                if bad:
                    ex = ", ".join(f"#{i}: {x} vs {y}" for i, x, y in bad[:5])
                    lines.append(f"- **MISMATCH** {r['engine']} `{k}`: {len(bad)} of {len(pairs)} differ ({ex}){note}")
                else:
                    lines.append(f"- {r['engine']} `{k}`: all {len(pairs)} agree{note}")
        p("\n".join(lines))
        ans = ref["sp_out"]["answers"]
        found = [x for x in ans if x is not None and x >= 0]
        if found:
            p(f"\nShortest paths (out): {len(found)} of {len(ans)} pairs connected, length p50 {pct(found, .5)}, max {max(found)}. "
              f"3-hop reach (out) p50 {pct([x for x in ref['3hop_out']['answers'] if x is not None], .5)} nodes, "
              f"(both) p50 {pct([x for x in ref['3hop_both']['answers'] if x is not None], .5)} nodes.")
        p("")

    notes = []
    if api:
        ing = api["ingest"]
        notes.append(f"PluresDB ingest: {ing['nodes']:,} nodes by `put` in one transaction {secs(ing['nodes_s'])} "
                     f"({rate(ing['nodes_per_s'])}), {ing['edges']:,} edges by one `link_many` {secs(ing['edges_s'])}; "
                     f"file {ing['file_bytes'] / 1e6:.0f} MB. After reopening, second query {secs(api['open']['second_query_s'])}.")
        o = api["open"]
        if "build_mmap_s" in o:
            notes.append(f"Adjacency build on a fresh handle, median of 5 alternated opens: {secs(o['build_plain_s'])}; "
                         f"with a 256 MiB memory map (`OpenOptions::mmap_size_mib(256)`) {secs(o['build_mmap_s'])}.")
    lh = extra.get("live_handle")
    if lh:
        notes.append(f"Live handle (adjacency already loaded): `link_many` of {lh['extra_edges']:,} more edges "
                     f"{secs(lh['link_many_s'])} ({rate(lh['edges_per_s'])}); the next graph query catches up in "
                     f"{secs(lh['catch_up_query_s'])}.")
    if cte:
        ing = cte["ingest"]
        notes.append(f"SQLite: `{' '.join(cte['schema'].split())}`; WAL, synchronous=NORMAL, 16 MiB cache (as PluresDB); "
                     f"edges inserted with both indexes in place in one transaction ({rate(ing['edges_per_s'])}, "
                     f"file {ing['file_bytes'] / 1e6:.0f} MB). The shortest-path CTE searches at most "
                     f"{cte['sp_max_depth']} hops and stops at the first row reaching the target.")
    raw = by.get("raw")
    if raw:
        notes.append(f"pluresdb-graph raw: `Graph::extend_edges` from in-memory strings, then `degree`, `expand`, "
                     f"`shortest_path` on node indices; adjacency {raw['open']['memory_bytes'] / 1e6:.0f} MB.")
    kz = by.get("kuzu")
    if kz:
        ing = kz["ingest"]
        notes.append(f"kuzu: embedded, in-process, `COPY FROM` the CSVs (nodes {secs(ing['nodes_s'])}, edges "
                     f"{secs(ing['edges_s'])}); prepared statements, timed in Python around execute + fetch.")
    if notes:
        p("Notes:\n\n" + "\n".join(f"- {n}" for n in notes))

    text = "\n".join(out) + "\n"
    print(text)
    with open(os.path.join(a.data, "report.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
