"""Genres on 30-s excerpts in the classic genre datasets' format: 22.05-kHz mono 16-bit WAV, judged per group.

    python bench/eval_excerpts.py --group "Rock,Metal,Punk,Alternative=FOLDER" [--group ...] [--keep DIR]

Every file of a group's folder gives three 30-s excerpts (at 20, 50 and 80 % of the track; files shorter than
31 s are skipped), written as 22.05-kHz mono WAV with no tags, the format of many older rips and of the
collections genre taggers are usually judged on. The default configuration decides them exactly as
`tagger scan --pretend` would; a decision is wrong when any written value is outside the group's acceptable
values (compared ignoring case, spaces, hyphens and '&'); abstaining is never wrong.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import LOW_RATE, decode_mono, save, write_wav  # noqa: E402
from tagger.config import load_config  # noqa: E402
from tagger.decision.context import normalise  # noqa: E402
from tagger.pipeline.scanner import load_models, scan  # noqa: E402

RATE = LOW_RATE
SECONDS = 30
AT = (0.2, 0.5, 0.8)


def cut(folder: Path, group: int, out: Path, extensions) -> int:
    n = 0
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() not in extensions or not f.is_file():
            continue
        pcm = decode_mono(f, RATE)
        length = SECONDS * RATE
        if len(pcm) < length + RATE:
            continue
        for at in AT:
            start = int((len(pcm) - length) * at)
            write_wav(out / f"g{group}-{f.stem}-{int(at * 100)}.wav", pcm[start:start + length], RATE)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True, help="V1,V2,...=FOLDER: acceptable values, source")
    ap.add_argument("--keep", type=Path, help="write the excerpts here instead of a temporary folder")
    args = ap.parse_args()
    groups = []
    for spec in args.group:
        values, _, folder = spec.partition("=")
        accept = [v.strip() for v in values.split(",") if v.strip()]
        if not accept or not folder or not Path(folder).is_dir():
            ap.error(f"--group {spec!r}: expected V1,V2,...=FOLDER with an existing folder")
        groups.append((accept, Path(folder)))
    cfg = load_config(None)
    models = load_models(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        lib = args.keep or Path(tmp)
        lib.mkdir(parents=True, exist_ok=True)
        for i, (_, folder) in enumerate(groups):
            cut(folder, i, lib, set(cfg.extensions))
        report = scan([lib], cfg, models, None, pretend=True)
        got = {o.path.stem: (o.decision.fields["genre"].written if o.decision else []) for o in report.outcomes}
    out: dict = {"models": [m.card.analyser for m in models], "format": f"{RATE} Hz mono 16-bit WAV, {SECONDS} s",
                 "at": list(AT), "groups": []}
    for i, (ok, folder) in enumerate(groups):
        mine = {k: v for k, v in got.items() if k.startswith(f"g{i}-")}
        accept = {normalise(v) for v in ok}
        written = [k for k, v in mine.items() if v]
        wrong = {k: v for k, v in mine.items() if v and not all(normalise(x) in accept for x in v)}
        values = Counter(x for v in mine.values() for x in v)
        out["groups"].append({"folder": str(folder), "accept": ok, "excerpts": len(mine), "written": len(written),
                              "wrong": len(wrong), "wrong_excerpts": wrong, "values": dict(values.most_common())})
        print(f"{folder}: {len(mine)} excerpts, {len(written)} written, {len(wrong)} wrong: {dict(values.most_common())}")
    print("saved", save("excerpts", out))


if __name__ == "__main__":
    main()
