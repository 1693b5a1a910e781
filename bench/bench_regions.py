"""Region decoding against decoding whole files, with the same bounded windows, side by side in one run.

For each model set, the same tracks are analysed with ``max_windows`` windows per model, once decoding every
file whole and once decoding only the stretches those windows need (where the format seeks exactly):
seconds, CPU seconds of the process, how many tracks took the region path, and how far the song-level
outputs moved (largest tag difference, lowest embedding cosine; the resampler's float rounding only).

    python bench/bench_regions.py TRACK... [--max-windows 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import save  # noqa: E402
from tagger.analysis.engine import Engine, TrackResult  # noqa: E402
from tagger.models.session import load_model  # noqa: E402

SETS = {"musicnn-msd alone": ["musicnn-msd"],
        "default set (4 models)": ["musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat"]}


def run(models, files, max_windows: int, regions: bool) -> tuple[dict[str, TrackResult], float, float]:
    engine = Engine(models, max_batch=4, decode_workers=2, max_windows=max_windows, regions=regions)
    wall, cpu = time.perf_counter(), time.process_time()
    out = {str(r.path): r for r in engine.analyse(files) if isinstance(r, TrackResult)}
    if len(out) != len(files):
        raise SystemExit(f"only {len(out)} of {len(files)} tracks analysed")
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--max-windows", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="regions")
    args = ap.parse_args()
    files = [f.resolve() for f in args.files]
    table = {}
    for label, names in SETS.items():
        models = [load_model(n, device="cpu", memory="shared", precision="auto") for n in names]
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        results: dict[bool, dict[str, TrackResult]] = {}
        for _ in range(args.repeats):
            for regions in (False, True):  # alternating, so drift hits both alike
                results[regions], wall, cpu = run(models, files, args.max_windows, regions)
                runs[regions].append((wall, cpu))
        diffs, coss = [], []
        for path, full in results[False].items():
            part = results[True][path]
            for mid, a in full.models.items():
                b = part.models[mid]
                diffs.append(float(np.abs(a.tags - b.tags).max()))
                coss.append(float(a.embedding @ b.embedding /
                                  (np.linalg.norm(a.embedding) * np.linalg.norm(b.embedding) + 1e-12)))
        audio = sum(r.duration for r in results[False].values())
        row = {"tracks_decoded_in_regions": sum(r.fingerprint.startswith("pkt:") for r in results[True].values()),
               "max_tag_diff": max(diffs), "min_cosine": min(coss)}
        for regions, key in ((False, "whole_files"), (True, "regions")):
            wall = statistics.median(w for w, _ in runs[regions])
            row[key] = {"seconds": round(wall, 2), "cpu_seconds": round(statistics.median(c for _, c in runs[regions]), 2),
                        "x_realtime": round(audio / wall, 1)}
        row["speedup"] = round(row["whole_files"]["seconds"] / row["regions"]["seconds"], 2)
        table[label] = row
        print(label, row, file=sys.stderr)
    path = save(args.name, {"tracks": len(files), "audio_minutes": round(audio / 60, 1),
                            "max_windows": args.max_windows, "repeats": args.repeats, "sets": table})
    print(path)


if __name__ == "__main__":
    main()
