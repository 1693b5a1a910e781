"""The half-tagged library check for `tagger train`, on real music: how many untagged tracks get the user's genre
from a trained head, and how many of those are right.

Builds a library from one source folder per group (the user's genre value is given per group): every second
track of each group (sorted by name) carries the value, the others carry no genre (existing genres are
removed from the copies). Then, as a user would: `tagger scan LIB --no-write`, `tagger train`,
`tagger scan LIB --pretend --json`, and the proposals for the untagged half are compared with the truth.
Layouts: `folders` (one folder per group, as most libraries are filed), `flat` (every file in one folder,
so only the audio and the files' own album tags can help) and `clips` (every group cut to ``--per-group``
30-s MP3 excerpts with no tags at all but the user's genre on half of them, in one folder under anonymous
names: only the audio can help, as in a folder of downloaded clips; ``--split-seed`` picks which half is tagged).

    python bench/eval_heads.py --work /tmp/heads \\
        --group "Romantic Classical=/usr/share/games/wesnoth/1.16/data/core/music" --group "Arena Techno=..." ...
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import mutagen
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AUDIO = (".ogg", ".opus", ".flac", ".mp3", ".m4a", ".wav")


def make_library(groups: list[tuple[str, Path]], lib: Path, layout: str) -> dict[str, dict]:
    truth = {}
    for value, src in groups:
        files = sorted(f for f in src.rglob("*") if f.suffix.lower() in AUDIO and f.stat().st_size > 200_000)
        for i, f in enumerate(files):
            name = str(f.relative_to(src)).replace(os.sep, "_")
            dst = lib / value / name if layout == "folders" else lib / f"{value}-{name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
            audio = mutagen.File(dst, easy=True)
            if audio.tags is None:
                audio.add_tags()
            if "genre" in audio.tags:
                del audio.tags["genre"]
            tagged = i % 2 == 0
            if tagged:
                audio.tags["genre"] = [value]
            audio.save()
            truth[str(dst)] = {"genre": value, "tagged": tagged}
    return truth


def cut_clip(src: Path, dst: Path, start_fraction: float = 0.35, seconds: float = 30.0) -> None:
    """A ``seconds`` excerpt of ``src`` from ``start_fraction`` of its length (from the start for short files),
    as a 128 kbit/s MP3 with no metadata (FFmpeg through PyAV). Decoded from the start rather than seeking: some
    Ogg files here fail FFmpeg's seek."""
    import av

    with av.open(str(src)) as inp:
        stream = inp.streams.audio[0]
        duration = float(inp.duration or 0) / 1_000_000
        start = max(0.0, min(start_fraction * duration, duration - seconds))
        rate = stream.codec_context.sample_rate
        with av.open(str(dst), "w", format="mp3") as out:
            enc = out.add_stream("libmp3lame", rate=rate)
            enc.bit_rate = 128_000
            resampler = av.AudioResampler(format="s16p", layout="stereo", rate=rate)
            wanted, got = int(seconds * rate), 0
            for frame in inp.decode(stream):
                if frame.time is not None and frame.time < start:
                    continue
                for f in resampler.resample(frame):
                    f.pts = None
                    take = min(f.samples, wanted - got)
                    if take <= 0:
                        break
                    if take < f.samples:
                        arr = f.to_ndarray()[:, :take]
                        f = av.AudioFrame.from_ndarray(arr, format="s16p", layout="stereo")
                        f.sample_rate = rate
                    got += take
                    for packet in enc.encode(f):
                        out.mux(packet)
                if got >= wanted:
                    break
            for packet in enc.encode(None):
                out.mux(packet)


def _ffmpeg_opens(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)):
            return True
    except av.FFmpegError:
        return False


def make_clips(groups: list[tuple[str, Path]], lib: Path, per_group: int, seed: int) -> dict[str, dict]:
    """Every group cut to ``per_group`` clips (spread over its files), one folder, anonymous shuffled names;
    half of each group (chosen by ``seed``) carries the group's value as its only tag."""
    rng = np.random.default_rng(seed)
    plan = []
    for value, src in groups:
        files = sorted(f for f in src.rglob("*") if f.suffix.lower() in AUDIO and f.stat().st_size > 200_000
                       and _ffmpeg_opens(f))  # three HyperRogue Ogg files open in libvorbis but not in FFmpeg
        if len(files) >= per_group:
            picks = [(files[int(i)], 0.35) for i in np.linspace(0, len(files) - 1, per_group).round()]
        else:  # a small group gives two excerpts of some files (from 20 % and 60 % of their length)
            picks = [(files[i % len(files)], 0.2 if i < len(files) else 0.6) for i in range(min(per_group, 2 * len(files)))]
        tagged = np.zeros(len(picks), bool)
        tagged[rng.permutation(len(picks))[: (len(picks) + 1) // 2]] = True
        plan += [(value, f, start, bool(t)) for (f, start), t in zip(picks, tagged)]
    order = rng.permutation(len(plan))
    lib.mkdir(parents=True, exist_ok=True)
    truth = {}
    for n, i in enumerate(order):
        value, src, start, tagged = plan[i]
        dst = lib / f"clip-{n:03d}.mp3"
        cut_clip(src, dst, start)
        if tagged:
            audio = mutagen.File(dst, easy=True)
            if audio.tags is None:
                audio.add_tags()
            audio.tags["genre"] = [value]
            audio.save()
        truth[str(dst)] = {"genre": value, "tagged": tagged, "source": str(src), "start": start}
    return truth


def tagger(*args: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-m", "tagger", *args], env=env, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        raise SystemExit(f"tagger {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--group", action="append", required=True, help="VALUE=FOLDER")
    ap.add_argument("--layout", choices=["folders", "flat", "clips"], default="folders")
    ap.add_argument("--per-group", type=int, default=10, help="clips per group (layout clips)")
    ap.add_argument("--split-seed", type=int, default=0, help="which half is tagged (layout clips)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/heads.json"))
    args = ap.parse_args()
    groups = [(g.split("=", 1)[0], Path(g.split("=", 1)[1])) for g in args.group]
    work = args.work / (args.layout if args.layout != "clips" else f"clips-{args.split_seed}")
    lib, db = work / "lib", work / "db"
    truth_file = work / "truth.json"
    if not truth_file.exists():
        truth_file.parent.mkdir(parents=True, exist_ok=True)
        truth_file.write_text(json.dumps(make_clips(groups, lib, args.per_group, args.split_seed)
                                         if args.layout == "clips" else make_library(groups, lib, args.layout)))
    truth = json.loads(truth_file.read_text())
    env = {**os.environ, "XDG_CONFIG_HOME": str(work / "cfg"), "XDG_DATA_HOME": str(work / "data")}
    tagger("scan", str(lib), "--no-write", "--database", str(db), env=env)
    trained = json.loads(tagger("train", "--database", str(db), "--json", env=env))[0]
    report = json.loads(tagger("scan", str(lib), "--pretend", "--json", "--database", str(db), env=env))
    per_group: dict[str, Counter] = {}
    for f in report["files"]:
        t = truth[f["path"]]
        if t["tagged"]:
            continue
        values = (f["decision"] or {}).get("genre", {}).get("values", [])
        verdict = "none" if not values else ("right" if values[0] == t["genre"] else "wrong")
        per_group.setdefault(t["genre"], Counter())[verdict] += 1
    total = sum((c for c in per_group.values()), Counter())
    n = sum(total.values())
    written = total["right"] + total["wrong"]
    rep = trained.get("report") or {}
    result = {"date": str(date.today()), "layout": args.layout, "untagged": n, "written": written,
              "coverage": written / n, "precision": total["right"] / written if written else None,
              "right_of_all": total["right"] / n,
              "per_group": {g: dict(c) for g, c in per_group.items()},
              "head": {k: rep.get(k) for k in ("tracks", "accuracy", "majority_baseline", "coverage",
                                               "precision_when_written", "context", "set_agreement", "split")}}
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    old[work.name] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    main()
