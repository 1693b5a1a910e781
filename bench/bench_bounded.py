"""Bounded analysis (`max_windows`): how close N evenly spread windows per track come to a full analysis, on
real full-length music, for every model of the default set, and what it costs.

Reference: the full analysis, from a database that analysed the same files (`--database`, e.g. a plain
`tagger scan`), or computed here. Per model and N: the largest song-level tag difference and the lowest
embedding cosine over the tracks (median beside them), and seconds per track in one run.

    python bench/bench_bounded.py --database DB FILE... [--n 8 --n 16 --n 32]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagger.analysis.engine import Engine, TrackResult  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.library.store import Store  # noqa: E402
from tagger.pipeline.scanner import load_models  # noqa: E402


def run(models, files, max_windows: int) -> tuple[dict, float]:
    engine = Engine(models, max_batch=4, decode_workers=2, max_windows=max_windows)
    t = time.perf_counter()
    out = {str(r.path): r for r in engine.analyse(files) if isinstance(r, TrackResult)}
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--database", type=Path)
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/bounded.json")
    args = ap.parse_args()
    cfg = load_config(None)
    models = load_models(cfg)
    files = [f.resolve() for f in args.files]
    ref: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    full_seconds = None
    if args.database:
        with Store(args.database, writer=False) as store:
            for f in files:
                ref[str(f)] = {}
                for m in models:
                    rec = store.get(f, m.card.id)
                    if rec is None or rec.get("analyser") != m.card.analyser:
                        raise SystemExit(f"{f}: no full analysis by {m.card.analyser} in {args.database}")
                    ref[str(f)][m.card.id] = store.vectors(rec)
    else:
        full, full_seconds = run(models, files, 0)
        ref = {p: {mid: (mr.tags, mr.embedding) for mid, mr in r.models.items()} for p, r in full.items()}
    audio_s = None
    result: dict = {"date": str(date.today()), "machine": f"{platform.machine()}, 2 cores", "tracks": len(files),
                    "full_seconds_per_track": full_seconds / len(files) if full_seconds else None, "runs": {}}
    for n in args.n or [8, 16, 32]:
        got, seconds = run(models, files, n)
        if audio_s is None:
            audio_s = sum(r.duration for r in got.values())
            result["audio_minutes"] = round(audio_s / 60, 1)
        per_model = {}
        for m in models:
            mid = m.card.id
            diffs, coss, wins = [], [], []
            for p, r in got.items():
                tags, emb = ref[p][mid]
                mr = r.models[mid]
                diffs.append(float(np.abs(mr.tags - tags).max()))
                coss.append(float(mr.embedding @ emb / (np.linalg.norm(mr.embedding) * np.linalg.norm(emb) + 1e-12)))
                wins.append(mr.n_windows)
            per_model[mid] = {"max_tag_diff": max(diffs), "median_tag_diff": float(np.median(diffs)),
                              "min_cosine": min(coss), "median_cosine": float(np.median(coss)),
                              "median_windows": float(np.median(wins))}
        result["runs"][str(n)] = {"seconds_per_track": seconds / len(files), "models": per_model}
        print(json.dumps({n: result["runs"][str(n)]}, indent=1), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
