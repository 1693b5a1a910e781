"""Do decisions depend on the file's sample rate? The same music at its own rate and as 22.05-kHz mono WAV.

    python bench/bench_rate.py [--accept FILE.json] FOLDER...

Many everyday collections hold 22.05-kHz mono files (early rips, radio captures, the classic genre datasets).
Such a file carries nothing above 11 kHz. The 16-kHz models (musicnn, FCN) never hear that band, but the AudioSet
model hears up to 15 kHz at 32 kHz, and a band-limited recording is, to it, evidence about the recording
(old, lo-fi, made for broadcast) as much as about the music. This benchmark makes a 22.05-kHz mono 16-bit copy
of every file (PyAV's resampler), scans both into scratch databases with the default configuration and
reports, per model, how far the song-level probabilities move, and how many decisions change.

``--accept`` judges the decisions: a JSON object from file stem (or name) to the genre values a listener would
accept, in the format of ``../shared/data/genre-dev.json``; files it does not name are reported unjudged.
Without folders: the shared clips, judged by genre-dev.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import LOW_RATE, decode_mono, machine, save, write_wav  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.decision.context import normalise  # noqa: E402
from tagger.library.store import Store  # noqa: E402
from tagger.pipeline.scanner import load_models, scan  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def analyse(folder: Path, db: Path, cfg, models) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, list[str]]]]:
    """Song-level label vectors per file stem and model, and the decided values per field."""
    cfg = replace(cfg, database=db, write_enabled=False)
    with Store(db) as store:
        report = scan([folder], cfg, models, store)
        assert not report.failed, report.failed
        decided = {o.path.stem: {f: fd.written for f, fd in o.decision.fields.items()}
                   for o in report.outcomes if o.decision is not None}
        vectors: dict[str, dict[str, np.ndarray]] = {}
        for m in models:
            slots, records = store.slots(m.card.id)
            rows = store.matrix(m.card.id).rows(np.asarray(slots)) if len(slots) else []
            for rec, row in zip(records, rows):
                vectors.setdefault(Path(rec["path"]).stem, {})[m.card.id] = np.array(row[:len(m.card.labels)])
    return vectors, decided


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--accept", type=Path, help="JSON: file stem or name -> acceptable genre values")
    args = ap.parse_args()
    folders = args.folders or [SHARED / "audio"]
    for folder in folders:
        if not folder.is_dir():
            ap.error(f"{folder}: not a folder")
    accept_file = args.accept or (SHARED / "data" / "genre-dev.json" if not args.folders else None)
    accept = {}
    if accept_file is not None:
        accept = {Path(k).stem: {normalise(v) for v in vs}
                  for k, vs in json.loads(accept_file.read_text()).items() if not k.startswith("_")}
    cfg = load_config(None)
    models = load_models(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        orig, low = Path(tmp) / "orig", Path(tmp) / "low"
        orig.mkdir()
        low.mkdir()
        exts = set(cfg.extensions)
        for folder in folders:
            for f in sorted(folder.rglob("*")):
                if f.is_file() and f.suffix.lower() in exts:
                    (orig / f.name).symlink_to(f.resolve())
                    write_wav(low / (f.stem + ".wav"), decode_mono(f, LOW_RATE), LOW_RATE)
        a_vec, a_dec = analyse(orig, Path(tmp) / "db-orig", cfg, models)
        b_vec, b_dec = analyse(low, Path(tmp) / "db-low", cfg, models)
    stems = sorted(set(a_vec) & set(b_vec))
    out: dict = {"machine": machine(), "files": len(stems), "folders": [str(f) for f in folders],
                 "accept": str(accept_file) if accept_file else None, "models": {}}
    for m in models:
        d = [float(np.abs(a_vec[s][m.card.id] - b_vec[s][m.card.id]).max()) for s in stems]
        out["models"][m.card.id] = {"max_abs_change_median": float(np.median(d)),
                                     "max_abs_change_p90": float(np.percentile(d, 90)), "max_abs_change_max": max(d)}
        print(f"{m.card.id:16s} largest probability change per file: median {np.median(d):.3f}, "
              f"p90 {np.percentile(d, 90):.3f}, max {max(d):.3f}")
    for field in ("genre", "mood"):
        changed = [(s, a_dec[s][field], b_dec[s][field]) for s in stems if a_dec[s][field] != b_dec[s][field]]
        entry: dict = {"changed": len(changed), "changes": [{"file": s, "own_rate": x, "22k_mono": y} for s, x, y in changed]}
        if field == "genre" and accept:
            for name, dec in (("own_rate", a_dec), ("22k_mono", b_dec)):
                judged = [s for s in stems if s in accept]
                written = [s for s in judged if dec[s][field]]
                wrong = [s for s in written if not all(normalise(v) in accept[s] for v in dec[s][field])]
                entry[name] = {"judged": len(judged), "written": len(written), "wrong": len(wrong),
                               "wrong_files": {s: dec[s][field] for s in wrong}}
                print(f"genre at {name}: {len(judged)} judged, {len(written)} written, {len(wrong)} wrong")
            for name, dec in (("own_rate", a_dec), ("22k_mono", b_dec)):
                entry[name]["unjudged_values"] = dict(Counter("/".join(dec[s][field]) or "(none)"
                                                              for s in stems if s not in accept).most_common())
        out[field] = entry
        print(f"{field}: {len(changed)} of {len(stems)} decisions changed")
        for s, x, y in changed:
            print(f"    {s}: {x} -> {y}")
    print("saved", save("rate", out))


if __name__ == "__main__":
    main()
