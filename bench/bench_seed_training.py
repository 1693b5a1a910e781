"""Seed architectures trained on the rendered Groove MIDI set: test accuracy on its published split, training
time, training windows per second, on this machine's CPU (2 threads).

Five drum styles with enough beats in every split (rock capped at 40 training performances so it does not
swamp the rest; performances up to 90 s), rendered once with fluidsynth and the MuseScore General soundfont
into --cache. Each architecture trains with the same seed and early stopping on the published validation
split, for at most 12 epochs (3 for the 29-s fine-tuned models), which keeps the whole run to about an
hour on two cores: short trainings, not tuned results.

    python bench/bench_seed_training.py --cache /tmp/groove-bench [--arch mel-cnn ...]
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import groove  # noqa: E402

from exporter.training.archs import ARCHS  # noqa: E402
from exporter.training.data import load  # noqa: E402
from exporter.training.loop import TrainConfig, train  # noqa: E402

STYLES = ("rock", "funk", "jazz", "hiphop", "latin")


def manifest(shared: Path, cache: Path) -> Path:
    path = cache / "manifest.csv"
    if path.exists():
        return path
    rows = list(csv.DictReader(open(shared / "data/groove-midi/info.csv", newline="")))
    picked, per = [], Counter()
    for r in sorted(rows, key=lambda r: r["id"]):
        style = r["style"].split("/")[0]
        if style in STYLES and r["beat_type"] == "beat" and float(r["duration"]) <= 90:
            if style == "rock" and r["split"] == "train" and per["rock-train"] >= 40:
                continue
            per[f"{style}-{r['split']}"] += 1
            picked.append({**r, "base_style": style})
    rendered = groove.render(shared, picked, cache / "audio")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "genre", "split", "group"])
        for audio, r in rendered:
            w.writerow([audio.relative_to(cache), r["base_style"], r["split"], r["drummer"]])
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--arch", action="append")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/seed_training.json")
    args = ap.parse_args()
    why = groove.available(args.shared)
    if why:
        raise SystemExit(why)
    args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    mf = manifest(args.shared, args.cache)
    print(f"data ready in {time.monotonic() - t0:.0f} s: {mf}", file=sys.stderr)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("runs", {})
    for arch in args.arch or list(ARCHS):
        heavy = ARCHS[arch].window > 100_000
        ds = load(mf)
        split = Counter(e.split for e in ds.examples)
        cfg = TrainConfig(arch=arch, epochs=3 if heavy else 12, batch=8 if heavy else 16, patience=3,
                          windows_per_track=1 if heavy else 4, threads=2, seed=0, model_id=f"groove-{arch}")
        t = time.monotonic()
        rep = train(ds, cfg, args.cache / "models" / f"{arch}.onnx", log=lambda m: print(m, file=sys.stderr))
        ev = rep["evaluation"]["genre"]
        results["runs"][arch] = {"test_accuracy": ev["accuracy"], "majority_baseline": ev["majority_baseline"],
                                 "mean_roc_auc": ev["mean_roc_auc"], "epochs": rep["epochs"],
                                 "train_seconds": rep["train_seconds"], "wall_seconds": round(time.monotonic() - t, 1),
                                 "windows_per_second": round(rep["windows_per_second"], 1), "window_s": ARCHS[arch].window / 16000,
                                 "examples": dict(split)}
        results.update(date=str(date.today()), machine=f"{platform.machine()}, 2 threads (torch CPU)",
                       styles=list(STYLES))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({arch: results["runs"][arch]}), file=sys.stderr)


if __name__ == "__main__":
    main()
