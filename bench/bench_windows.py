"""Decision stability of the window bound: how many real tracks' decisions change, and what it saves.

    python bench/bench_windows.py TRACK_OR_FOLDER... [--rounds 1]

Runs `tagger scan --pretend --json` (fresh database, default model set) three ways on the same files:

- ``every``: every window of every model (``--max-windows 0``), the reference;
- ``count``: the bound before 2026-12-05: at most 32 windows per model whatever their length (so the 29-s
  FCNs heard every window of a 4-minute track), reproduced by replacing ``window_bound`` in the child;
- ``uncapped``: the bound before the musicnn cards' own cap of 16 (2026-12-05): 32 windows for every 3-s model,
  reproduced by ignoring the caps of short-window cards in the child;
- ``default``: the bound now: 32 windows' worth of 3-s audio per model (4 FCN windows), capped by each card
  (8 AudioSet windows, 16 for each musicnn model).

It prints, per pair, how many files' decisions (genre, mood, descriptors: the values that would be written)
differ, which, and the scan's wall seconds, and saves ``bench/results/windows.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import save  # noqa: E402

COUNT_RULE = """
import sys
import tagger.analysis.windows as w
w.window_bound = lambda card, n: (min(n, card.max_windows) if card.max_windows else n) if n > 0 else 0
from tagger.cli import main
sys.exit(main(sys.argv[1:]))
"""

UNCAPPED_RULE = """
import dataclasses, sys
import tagger.analysis.windows as w
rule = w.window_bound
w.window_bound = lambda card, n: rule(dataclasses.replace(card, max_windows=0) if card.window < 100_000 else card, n)
from tagger.cli import main
sys.exit(main(sys.argv[1:]))
"""
RULES = {"count": COUNT_RULE, "uncapped": UNCAPPED_RULE}


def scan(files: list[Path], how: str) -> tuple[dict[str, dict[str, list[str]]], float]:
    with tempfile.TemporaryDirectory() as td:
        lib = Path(td) / "lib"
        lib.mkdir()
        for i, f in enumerate(files):
            os.symlink(f.resolve(), lib / f"{i:03d}-{f.name}")
        args = ["scan", str(lib), "--pretend", "--json", "--database", f"{td}/db"]
        if how == "every":
            args += ["--max-windows", "0"]
        cmd = ([sys.executable, "-c", RULES[how], *args] if how in RULES else
               [sys.executable, "-m", "tagger", *args])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ,
                                                                                  "PYTHONPATH": str(ROOT)})
    report = json.loads(out.stdout)
    decisions = {Path(f["path"]).name: {k: v["values"] for k, v in (f.get("decision") or {}).items()}
                 for f in report["files"]}
    return decisions, report["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", type=Path)
    args = ap.parse_args()
    files = sorted(p for a in args.paths for p in ([a] if a.is_file() else a.rglob("*")) if p.is_file())
    runs = {how: scan(files, how) for how in ("every", "count", "uncapped", "default")}
    out: dict = {"tracks": len(files), "seconds": {k: v[1] for k, v in runs.items()}, "differ": {}}
    for a, b in (("every", "count"), ("every", "uncapped"), ("every", "default"), ("count", "uncapped"),
                 ("uncapped", "default")):
        da, db = runs[a][0], runs[b][0]
        diffs = {name: {k: [da[name][k], db[name].get(k)] for k in da[name] if da[name][k] != db[name].get(k)}
                 for name in da}
        diffs = {k: v for k, v in diffs.items() if v}
        out["differ"][f"{a} vs {b}"] = {"files": len(diffs), "of": len(da), "which": diffs}
        print(f"{a} vs {b}: {len(diffs)} of {len(da)} files' decisions differ")
        for name, d in diffs.items():
            print(f"    {name}: {d}")
    print("scan seconds:", out["seconds"])
    print("wrote", save("windows", out))


if __name__ == "__main__":
    main()
