"""How often the default configuration would write a wrong GENRE, and how often it writes one at all; which MOODs.

    python bench/eval_genres.py [FOLDER...]

With no folder: the shared clips, judged against ../shared/data/genre-dev.json (the acceptable genres per
file; compared case-insensitively, ignoring spaces, hyphens and '&'; abstaining is never wrong). Folders given
are reported without a verdict (no labels): the share of files that get a genre, and which values. For every
folder (the shared clips included) the moods written are counted too: we have no mood labels, so this says how
often each mood would go in, not whether rightly. The
decision is exactly `tagger scan --pretend`'s (same models, same code), whatever tags the files hold.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import save  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.decision.context import normalise  # noqa: E402
from tagger.pipeline.scanner import load_models, scan  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def decisions(folder: Path, cfg, models) -> dict[str, dict[str, list[str]]]:
    """Per file name: the values each field would get (one pretend scan per folder)."""
    report = scan([folder], cfg, models, None, pretend=True)
    return {o.path.name: ({f: fd.written for f, fd in o.decision.fields.items()} if o.decision else {})
            for o in report.outcomes}


def field_of(got: dict[str, dict[str, list[str]]], field: str) -> dict[str, list[str]]:
    return {name: fields.get(field, []) for name, fields in got.items()}


def mood_counts(folder: Path, got: dict[str, dict[str, list[str]]]) -> dict:
    moods = field_of(got, "mood")
    counts = Counter(v for values in moods.values() for v in values)
    with_mood = sum(bool(v) for v in moods.values())
    print(f"{folder}: {len(moods)} files, a mood written to {with_mood}: {dict(counts.most_common())}")
    return {"files": len(moods), "with_mood": with_mood, "values": dict(counts.most_common())}


def main() -> None:
    cfg = load_config(None)
    models = load_models(cfg)
    out: dict = {"models": [m.card.analyser for m in models], "genre_policy": vars(cfg.fields["genre"])}
    dev = json.loads((SHARED / "data" / "genre-dev.json").read_text())
    shared = decisions(SHARED / "audio", cfg, models)
    got = field_of(shared, "genre")
    rows = []
    for name, ok in dev.items():
        if name.startswith("_"):
            continue
        values = got.get(name, [])
        wrong = bool(values) and not all(normalise(v) in {normalise(a) for a in ok} for v in values)
        rows.append({"file": name, "written": values, "wrong": wrong})
        print(f"{'WRONG ' if wrong else ''}{name}: {values or '(abstained)'}")
    n = len(rows)
    out["dev"] = {"files": n, "written": sum(bool(r["written"]) for r in rows), "wrong": sum(r["wrong"] for r in rows),
                  "rows": rows}
    print(f"dev: {out['dev']['written']}/{n} written, {out['dev']['wrong']} wrong")
    out["moods"] = {"shared clips": mood_counts(SHARED / "audio", shared)}
    for folder in map(Path, sys.argv[1:]):
        if not folder.is_dir():
            sys.exit(f"{folder}: not a folder")
        both = decisions(folder, cfg, models)
        got = field_of(both, "genre")
        counts = Counter(v for values in got.values() for v in values)
        share = sum(bool(v) for v in got.values()) / max(len(got), 1)
        out.setdefault("folders", {})[str(folder)] = {"files": len(got), "written_share": round(share, 3),
                                                      "values": dict(counts.most_common())}
        print(f"{folder}: {len(got)} files, genre written to {share:.0%}: {dict(counts.most_common())}")
        out["moods"][str(folder)] = mood_counts(folder, both)
    print("saved", save("genres", out))


if __name__ == "__main__":
    main()
