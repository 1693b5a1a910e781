"""Cost of the tag write's audio check: demuxed packets (now) against decoded samples (before), on real
full-length tracks in several formats. Median seconds per write_changes call, both in one run.

    python bench/bench_write.py TRACK.ogg [TRACK ...]     (FLAC and MP3 copies are made of each)
"""
from __future__ import annotations

import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tagger.tagging.writer as writer  # noqa: E402
from tagger.analysis.decode import decode  # noqa: E402
from tagger.errors import DecodeError, TagWriteError  # noqa: E402
from tagger.tagging.plan import Change  # noqa: E402


def copies(src: Path, folder: Path) -> list[Path]:
    from pedalboard.io import AudioFile

    out = [folder / f"{src.stem}{src.suffix}"]
    shutil.copy2(src, out[0])
    audio = decode(src, 44100).samples[None, :]
    for suffix, opts in ((".flac", {}), (".mp3", {"quality": "V2"})):
        p = folder / f"{src.stem}{suffix}"
        with AudioFile(str(p), "w", 44100, 1, **opts) as f:
            f.write(audio)
        out.append(p)
    return out


def timed(path: Path, mode: str, repeats: int = 3) -> float | str:
    times = []
    real = writer.packet_digest
    for i in range(repeats):
        if mode != "packets":
            def no_packets(p):
                raise DecodeError(p, "bench: decoded check")
            writer.packet_digest = no_packets
        try:
            t = time.perf_counter()
            try:
                writer.write_changes(path, [Change("GENRE", writer.read_fields(path)["GENRE"], [f"Bench {mode} {i}"])],
                                     expect=None)
            except TagWriteError as exc:  # e.g. a decoder whose output depends on the Ogg page layout
                return f"refused: {exc.reason}"
            times.append(time.perf_counter() - t)
        finally:
            writer.packet_digest = real
    return statistics.median(times)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in map(Path, sys.argv[1:]):
            for path in copies(src, Path(tmp)):
                row = {"file": path.name, "MB": round(path.stat().st_size / 1e6, 1)}
                for mode in ("packets", "decode both"):
                    got = timed(path, mode)
                    row[mode] = round(got, 3) if isinstance(got, float) else got
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    out = {"date": str(date.today()), "machine": f"{platform.machine()}, 2 cores", "seconds_per_write": rows}
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/results/write.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
