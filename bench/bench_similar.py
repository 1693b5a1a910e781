"""Exact top-10 similarity search over synthetic 200-d embeddings at 100k and 1M tracks.

    python bench/bench_similar.py [--sizes 100000 1000000] [--queries 30]

The matrix lives in a memory-mapped file exactly as the store keeps it (unit rows, ~5 % free slots masked
out); latency is the median over queries of `tagger.lookup.similar.top_k`, every result checked against a full
brute-force numpy sort. Targets (issue 5, 2-core CPU): < 10 ms at 100k, < 100 ms at 1M.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import save  # noqa: E402
from tagger.lookup.similar import top_k  # noqa: E402

DIM = 200


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "unit.f32"
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, DIM))
            for start in range(0, n, 100_000):  # clustered data, like real embeddings
                block = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
                block[:, :20] += 3 * rng.standard_normal((1, 20), dtype=np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                mm[start:start + len(block)] = block
            mm.flush()
            del mm
            unit = np.load(path, mmap_mode="r")
            valid = rng.random(n) > 0.05
            times = []
            for qi in range(args.queries):
                q = np.array(unit[int(rng.integers(0, n))])
                t = time.perf_counter()
                idx, scores = top_k(unit, valid, q, 10)
                times.append(time.perf_counter() - t)
                ref_scores = np.where(valid, np.asarray(unit) @ q, -np.inf)
                ref = np.lexsort((np.arange(n), -ref_scores))[:10]
                assert idx.tolist() == ref.tolist(), f"query {qi}: top-10 differs from brute force"
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            out[str(n)] = {"median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * float(np.percentile(times, 90)),
                           "matrix_mb": n * DIM * 4 / 1e6, "max_rss_mb": rss_mb, "checked_equal_to_brute_force": True}
            print(f"{n:>9,d} tracks: exact top-10 median {out[str(n)]['median_ms']:.1f} ms "
                  f"(p90 {out[str(n)]['p90_ms']:.1f}), matrix {out[str(n)]['matrix_mb']:.0f} MB mapped, "
                  f"peak RSS {rss_mb:.0f} MB; equal to brute force on {args.queries} queries")
    print("saved", save("similar", {"dim": DIM, "queries": args.queries, "sizes": out}))


if __name__ == "__main__":
    main()
