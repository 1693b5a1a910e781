"""Head training time at library scale: `tagger train` on N tracks (default 10,000) over the default model set.

The store is synthetic in its size only: every track's vectors are a real analysed track's vectors (from the
database given with --from, e.g. one `tagger scan` filled) plus small noise, and tracks come in albums of 10
that share the album's user genre (20 values). Timed: collecting the vectors, the held-out folds, the final
fit, the ONNX export with its check and the report, i.e. everything `tagger train` does.

    python bench/bench_train.py --from ~/.local/share/tagger/db [-n 10000]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.heads import TrainOptions, train  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.library.store import Store  # noqa: E402
from tagger.models.card import Card  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="source", required=True, help="a database with analysed tracks")
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--out", default=str(ROOT / "bench/results/train.json"))
    args = ap.parse_args()
    cfg = load_config(None)
    src = Store(Path(args.source), writer=False)
    cards = [Card.from_json(src.card_json(m)) for m in cfg.models]
    real = []
    for card in cards:
        slots, recs = src.slots(card.id)
        real.append((src.matrix(card.id).rows(slots), len(card.labels)))
    n_real = min(len(r[0]) for r in real)
    rng = np.random.default_rng(0)
    values = [f"Genre {i:02d}" for i in range(20)]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db"
        t0 = time.monotonic()
        with Store(db, writer=True) as store:
            for card in cards:
                store.describe(card.id, card.to_json())
            for i in range(args.n):
                album = i // 10
                base = int(rng.integers(n_real))
                rec = {"path": f"/lib/{album:05d}/{i:06d}.flac", "size": 1, "mtime_ns": 1, "status": "ok",
                       "album": f"Album {album}", "user": {"genre": [values[album % 20]]} if i % 2 == 0 else {}}
                for card, (rows, n_labels) in zip(cards, real):
                    row = rows[base] + rng.normal(0, 0.01, rows.shape[1]).astype(np.float32)
                    store.put({**rec, "model": card.id, "analyser": card.analyser}, row[:n_labels], row[n_labels:])
            store.commit()
        built = time.monotonic() - t0
        with Store(db, writer=False) as store:
            t0 = time.monotonic()
            (result, _) = train(store, cards, cfg.fields, db, TrainOptions(fields=("genre", "mood")), None, cfg.vocabulary)
            seconds = time.monotonic() - t0
    out = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
           f"{__import__('os').cpu_count()} cores", "tracks": args.n, "tagged": result.report["tracks"],
           "train_seconds": round(seconds, 2), "store_build_seconds": round(built, 1),
           "fit_breakdown": result.report["seconds"], "accuracy_note": "labels are dealt to albums at random here: timing only, accuracy is meaningless",
           "target_seconds": 60}
    out["features"] = sum(len(c.labels) + c.embedding_dim for c in cards)
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
