"""The database at library scale: open time, lookup by path, commit cost per analysed track.

    python bench/bench_store.py [--tracks 100000]

Synthetic records shaped like real ones (about 20 fields) and real-size vectors (50 tags + 200-d embedding).
Targets (issue 3): open < 1 s, lookup < 1 ms, < 20 ms per track amortised.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import save  # noqa: E402
from tagger.library.store import Store  # noqa: E402


def record(i: int) -> dict:
    """Shaped like what `tagger scan` stores for a tagged track."""
    return {"path": f"/music/Artist {i % 5000}/Album {i % 800}/{i:02d} Track title number {i}.flac",
            "model": "musicnn-msd", "analyser": "musicnn-msd@0.1.0+tagger.1", "size": 30_000_000 + i,
            "mtime_ns": 1_700_000_000_000_000_000 + i, "analysed_at": "2026-11-21T08:00:00Z", "status": "ok",
            "fingerprint": f"{i:032x}", "duration": 240.5, "format": "flac",
            "written": {"GENRE": ["Rock", "Indie"], "MOOD": ["happy"], "TAGGER_DESCRIPTORS": ["1990s", "guitar"]}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--commit-every", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        t = time.perf_counter()
        with Store(db) as s:
            for i in range(args.tracks):
                s.put(record(i), rng.random(50, dtype=np.float32), rng.standard_normal(200, dtype=np.float32))
            s.commit()
        build = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in db.rglob("*") if p.is_file()) / 1e6

        opens = []
        for _ in range(3):
            t = time.perf_counter()
            s = Store(db)
            opens.append(time.perf_counter() - t)
            s.close()
        with Store(db) as s:
            probe = [record(int(i))["path"] for i in rng.integers(0, args.tracks, 2000)]
            t = time.perf_counter()
            for p in probe:
                assert s.get(p, "musicnn-msd") is not None
            lookup_us = (time.perf_counter() - t) / len(probe) * 1e6
            # Analysis-shaped work: new tracks arrive and are committed every `commit_every` tracks.
            n_new = 1000
            t = time.perf_counter()
            for i in range(args.tracks, args.tracks + n_new):
                s.put(record(i), rng.random(50, dtype=np.float32), rng.standard_normal(200, dtype=np.float32))
                if s.pending >= args.commit_every:
                    s.commit()
            s.commit()
            per_track_ms = (time.perf_counter() - t) / n_new * 1000
    res = {"tracks": args.tracks, "open_s": statistics.median(opens), "lookup_us": lookup_us,
           "commit_ms_per_track": per_track_ms, "commit_every": args.commit_every, "db_mb": size_mb,
           "initial_bulk_load_s": build}
    print(f"{args.tracks} tracks, {size_mb:.0f} MB on disk: open {res['open_s']:.2f} s, lookup {lookup_us:.1f} us, "
          f"{per_track_ms:.2f} ms per track amortised (commit every {args.commit_every})")
    print("saved", save("store", res))


if __name__ == "__main__":
    main()
