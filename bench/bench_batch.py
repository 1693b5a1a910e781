"""`tagger batch` against `tagger scan` on the same real files, and the similarity index at 1M tracks.

    python bench/bench_batch.py scan TRACK... [--repeats 1]     tracks/min, side by side in one run
    python bench/bench_batch.py index [--tracks 1000000]        recall@10 and query latency

``scan``: every run is a fresh process with a fresh database or results folder, default model set, the
default bounded windows; `tagger scan --no-write` then `tagger batch run` (a local Ray on this machine's
cores: decode tasks and one inference actor), alternating, medians of --repeats. Ray's start-up (about 5 s)
is inside the batch figure, as a user would see it.

``index``: clustered synthetic 200-d unit vectors (the embedding width of musicnn-msd), the IVF-PQ index
with exact re-ranking built as `tagger batch index` builds it, 200 queries: recall@10 against exact search
(brute force) and median query latency, for several nprobe values.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import save  # noqa: E402

DIM = 200


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t


def bench_scan(files: list[Path], repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as td:
        lib = Path(td) / "lib"
        lib.mkdir()
        for f in files:
            os.symlink(f.resolve(), lib / f.name)
        py = sys.executable
        runs: dict[str, list[float]] = {"tagger scan --no-write": [], "tagger batch run": []}
        for r in range(repeats):
            runs["tagger scan --no-write"].append(timed(
                [py, "-m", "tagger", "scan", str(lib), "--no-write", "--database", f"{td}/db{r}"]))
            runs["tagger batch run"].append(timed(
                [py, "-m", "tagger", "batch", "run", str(lib), "-o", f"{td}/out{r}", "--num-cpus", str(os.cpu_count())]))
    out = {"tracks": len(files), "runs": {}}
    for name, secs in runs.items():
        med = statistics.median(secs)
        out["runs"][name] = {"seconds": round(med, 1), "tracks_per_min": round(60 * len(files) / med, 1)}
        print(f"{name:<24} {med:6.1f} s   {60 * len(files) / med:6.1f} tracks/min")
    return out


def bench_index(n: int, queries: int = 200) -> dict:
    from tagger.batch.index import Index, IndexParams, write_index

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    vecs = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        k = min(100_000, n - s)
        vecs[s:s + k] = centres[rng.integers(0, len(centres), k)] + 1.2 * rng.standard_normal((k, DIM), dtype=np.float32)
    meta = [{"id": str(i), "path": f"/m/{i}", "duration": 0.0, "fingerprint": ""} for i in range(n)]
    out: dict = {"tracks": n, "dim": DIM}
    with tempfile.TemporaryDirectory() as td:
        t = time.perf_counter()
        info = write_index(vecs, meta, Path(td) / "ix", {"model": "synthetic", "analyser": "synthetic@1"}, IndexParams())
        out["build_s"] = round(time.perf_counter() - t, 1)
        out["index"] = info
        del vecs
        unit = np.load(Path(td) / "ix" / "vectors.npy", mmap_mode="r")
        qs = rng.choice(n, queries, replace=False)
        exact_ms, truth = [], []
        for q in qs:
            t = time.perf_counter()
            scores = np.asarray(unit) @ unit[q]
            scores[q] = -np.inf
            top = np.argpartition(-scores, 10)[:10]
            exact_ms.append((time.perf_counter() - t) * 1000)
            truth.append(set(top.tolist()))
        out["exact_median_ms"] = round(statistics.median(exact_ms), 1)
        out["ann"] = {}
        for nprobe, rerank in ((8, 100), (16, 200), (32, 200), (64, 400)):
            index = Index(Path(td) / "ix", nprobe=nprobe, rerank=rerank)
            lat, hits = [], 0
            for q, want in zip(qs, truth):
                t = time.perf_counter()
                got = index.search(np.asarray(unit[q]), 10, exclude=int(q))
                lat.append((time.perf_counter() - t) * 1000)
                hits += len(want & {r for r, _ in got})
            key = f"nprobe={nprobe}, rerank={rerank}"
            out["ann"][key] = {"recall_at_10": round(hits / (10 * len(qs)), 4),
                               "median_ms": round(statistics.median(lat), 2)}
            print(f"{key:<24} recall@10 {hits / (10 * len(qs)):.4f}   median {statistics.median(lat):.2f} ms")
    print(f"exact search median {out['exact_median_ms']} ms; index built in {out['build_s']} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scan")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--repeats", type=int, default=1)
    i = sub.add_parser("index")
    i.add_argument("--tracks", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.what == "scan":
        print("wrote", save("batch_scan", bench_scan(args.files, args.repeats)))
    else:
        print("wrote", save("batch_index", bench_index(args.tracks)))


if __name__ == "__main__":
    main()
