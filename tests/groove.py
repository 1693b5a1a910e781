"""Real labelled audio for training tests: Groove MIDI drum performances rendered with fluidsynth.

The Groove MIDI Dataset (CC BY 4.0, ``../shared/data/groove-midi``) holds 1,150 human drum performances with a
style per performance and the drummer who played it; Debian's ``fluidsynth`` renders them with the MIT MuseScore
General soundfont. The drummer stands in for the artist (so group splits are testable) and the style for the
user's genre.
"""
from __future__ import annotations

import csv
import shutil
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SOUNDFONTS = ("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3", "/usr/share/sounds/sf3/MuseScore_General.sf3",
              "/usr/share/sounds/sf2/FluidR3_GM.sf2")


def soundfont() -> Path | None:
    return next((Path(p) for p in SOUNDFONTS if Path(p).is_file()), None)


def available(shared: Path | None) -> str | None:
    """None when rendering is possible, else the reason it is not."""
    if shared is None or not (shared / "data/groove-midi/info.csv").is_file():
        return "../shared/data/groove-midi not present"
    if shutil.which("fluidsynth") is None:
        return "fluidsynth not installed (apt-get install fluidsynth musescore-general-soundfont-small)"
    if soundfont() is None:
        return "no General MIDI soundfont installed (apt-get install musescore-general-soundfont-small)"
    return None


def pick(shared: Path, styles: tuple[str, ...], per_style: int, min_s: float = 8.0, max_s: float = 60.0) -> list[dict]:
    """``per_style`` beat performances of each base style, spread over as many drummers as possible."""
    with open(shared / "data/groove-midi/info.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for style in styles:
        by_drummer: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["style"].split("/")[0] == style and r["beat_type"] == "beat" and min_s <= float(r["duration"]) <= max_s:
                by_drummer[r["drummer"]].append(r)
        chosen: list[dict] = []
        queues = [sorted(v, key=lambda r: r["id"]) for _, v in sorted(by_drummer.items())]
        while len(chosen) < per_style and any(queues):
            for q in queues:
                if q and len(chosen) < per_style:
                    chosen.append(q.pop(0))
        out += [{**r, "base_style": style} for r in chosen]
    return out


def render(shared: Path, picks: list[dict], folder: Path, rate: int = 22050) -> list[tuple[Path, dict]]:
    """Render each pick to ``folder/<drummer>/<style>-<n>.wav`` (filed by artist, so a folder holds mixed
    styles); two fluidsynth processes at a time."""
    sf = soundfont()
    assert sf is not None

    def one(item: tuple[int, dict]) -> tuple[Path, dict]:
        i, r = item
        out = folder / r["drummer"] / f"{r['base_style']}-{i:03d}.wav"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "1.0", "-r", str(rate), "-F", str(out), str(sf),
                        str(shared / "data/groove-midi" / r["midi_filename"])],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        return out, r

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, enumerate(picks)))
