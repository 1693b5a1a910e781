"""Shared front ends on or off, the same engine and tracks, alternating runs in one process (no start-up in the
figures): wall and CPU seconds of the default model set, whose two FCNs share their spectrogram.

    python bench/bench_frontend.py TRACK... [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import save  # noqa: E402
from tagger.analysis.engine import Engine, TrackResult  # noqa: E402
from tagger.models.session import load_model  # noqa: E402
from tagger.models.shared_front import find_shared_fronts  # noqa: E402

DEFAULT_SET = ["musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    models = [load_model(n, device="cpu", memory="shared", precision="auto") for n in DEFAULT_SET]
    shared = sorted(models[i].card.id for i in find_shared_fronts(models))
    runs: dict[str, list[tuple[float, float]]] = {"shared": [], "whole": []}
    for _ in range(args.repeats):
        for mode in runs:
            engine = Engine(models, max_batch=4, decode_workers=2, max_windows=32)
            if mode == "whole":
                engine.fronts = {}
            wall, cpu = time.perf_counter(), time.process_time()
            done = sum(isinstance(r, TrackResult) for r in engine.analyse(args.files))
            runs[mode].append((time.perf_counter() - wall, time.process_time() - cpu))
            if done != len(args.files):
                raise SystemExit(f"only {done} of {len(args.files)} tracks analysed")
    table = {mode: {"seconds": round(statistics.median(w for w, _ in r), 2),
                    "cpu_seconds": round(statistics.median(c for _, c in r), 2),
                    "runs": [round(w, 2) for w, _ in r]} for mode, r in runs.items()}
    table["speedup"] = round(table["whole"]["seconds"] / table["shared"]["seconds"], 3)
    print(table, file=sys.stderr)
    print(save("frontend", {"tracks": len(args.files), "models": DEFAULT_SET, "sharing": shared,
                            "repeats": args.repeats, "results": table}))


if __name__ == "__main__":
    main()
