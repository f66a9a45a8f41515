"""Builds hnswlib on a prepared data set once per index seed and prints recall@10 at a few ef,
to tell a recall difference between engines from the spread between index seeds.

    bench/vector/.venv/bin/python bench/vector/hnswlib_seeds.py DATA_DIR SEED [SEED ...]

DATA_DIR is a directory `run.py` prepared under bench/vector/data/ (base.f32, query.f32, gt.i32,
meta.json). Builds and queries on one thread, M=16, ef_construction=200, as run.py does.
"""

import json
import sys
import time
from pathlib import Path

import hnswlib
import numpy as np


def main() -> None:
    d = Path(sys.argv[1])
    meta = json.loads((d / "meta.json").read_text())
    dim, space = meta["dim"], meta["metric"]
    base = np.fromfile(d / "base.f32", dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(d / "query.f32", dtype="<f4").reshape(-1, dim)
    gt = np.fromfile(d / "gt.i32", dtype="<i4").reshape(queries.shape[0], -1)
    for seed in (int(s) for s in sys.argv[2:]):
        idx = hnswlib.Index(space=space, dim=dim)
        idx.init_index(max_elements=base.shape[0], ef_construction=200, M=16, random_seed=seed)
        t = time.time()
        idx.add_items(base, np.arange(base.shape[0]), num_threads=1)
        out = {"seed": seed, "build_s": round(time.time() - t, 1)}
        for ef in (96, 192):
            idx.set_ef(ef)
            labels, _ = idx.knn_query(queries, k=10, num_threads=1)
            hits = sum(len(set(f) & set(g[:10])) for f, g in zip(labels, gt))
            out[f"recall_ef{ef}"] = hits / (queries.shape[0] * 10)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
