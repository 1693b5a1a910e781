"""Per-window time of every model of the default set (and musicnn-mtt), float against its int8 variant.

    python bench/bench_precision.py [--runs 40]

Batch 1 and batch 4 (the default `batch_size`), 2 threads, medians over ``--runs`` after warm-up, alternating
the two precisions in rounds so that both see the same machine state. Beside each int8 row: the verification
figures the exporter stored in the variant (song-level tags against float, embedding cosine, top 5) and the
CPU features that made the runtime choose it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import ms_per_window, save  # noqa: E402
from tagger.models.session import BUNDLED_DIR, VARIANT_KEY, int8_candidate  # noqa: E402

MODELS = ["musicnn-msd", "musicnn-mtt", "musicnn-jamendo", "fcn-jamendo", "fcn-mtat"]


def verification(model_id: str) -> dict | None:
    import onnx

    path = BUNDLED_DIR / "int8" / f"{model_id}.onnx"
    if not path.exists():
        return None
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(meta[VARIANT_KEY])["verification"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    threads = min(2, os.cpu_count() or 1)
    out: dict = {"threads": threads, "models": {}}
    for model_id in MODELS:
        variant, why = int8_candidate(BUNDLED_DIR / f"{model_id}.onnx")
        precisions = ["float"] + (["int8"] if variant is not None else [])
        row: dict = {"int8": why}
        for batch in (1, 4):
            times: dict[str, list[float]] = {p: [] for p in precisions}
            for _ in range(args.rounds):
                for p in precisions:
                    times[p].append(ms_per_window(model_id, threads, batch, runs=args.runs, precision=p)[0])
            for p in precisions:
                row[f"{p}_batch{batch}_ms"] = round(statistics.median(times[p]), 2)
            if variant is not None:
                row[f"speedup_batch{batch}"] = round(row[f"float_batch{batch}_ms"] / row[f"int8_batch{batch}_ms"], 2)
        row["verification"] = verification(model_id)
        out["models"][model_id] = row
        print(model_id, json.dumps(row))
    print("wrote", save("precision", out))


if __name__ == "__main__":
    main()
