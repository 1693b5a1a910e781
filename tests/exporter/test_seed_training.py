"""`python -m exporter train ARCH`: every seed architecture trains on real audio (rendered Groove MIDI drum
performances), its loss falls, it exports through the exporter's checks, and `tagger analyze` runs it."""
from __future__ import annotations

import csv
import json

import groove
import numpy as np
import pytest
from conftest import SHARED

torch = pytest.importorskip("torch")

WHY_NOT = groove.available(SHARED if SHARED.is_dir() else None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]

from exporter.training.archs import ARCHS  # noqa: E402


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Six performances, two styles, two drummers each; tempo class as a second (mood-like) head."""
    root = tmp_path_factory.mktemp("seed")
    picks = groove.pick(SHARED, ("rock", "jazz"), per_style=3, min_s=8.0, max_s=30.0)
    rendered = groove.render(SHARED, picks, root / "audio")
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "genre", "mood", "split", "group"])
        for i, (audio, row) in enumerate(rendered):
            tempo = "fast" if int(row["bpm"]) >= 110 else "slow"
            w.writerow([audio.relative_to(root), row["base_style"], tempo, "validation" if i in (2, 5) else "train",
                        row["drummer"]])
    return path


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_each_architecture_trains_exports_and_runs_in_tagger(arch, manifest, tmp_path, capsys):
    from exporter.__main__ import main as exporter_main
    from tagger.cli import main as tagger_main

    out = tmp_path / f"{arch}.onnx"
    heavy = ARCHS[arch].window > 100_000
    steps = 6 if heavy else 16
    assert exporter_main(["train", arch, "--data", str(manifest), "--output", str(out), "--epochs", "40",
                          "--batch", "2" if heavy else "4", "--max-steps", str(steps), "--windows-per-track", "2", "--patience", "50",
                          "--lr", "3e-4" if ARCHS[arch].pretrained else "1e-3", "--seed", "1"]) == 0
    report = json.loads((tmp_path / f"{arch}-report" / "report.json").read_text())
    losses = [x for h in report["history"] for x in h["losses"]]
    assert len(losses) == steps
    k = 3 if heavy else 5
    assert np.median(losses[-k:]) < np.median(losses[:k]), losses  # it learns (median: one odd batch is noise)
    assert report["steps"] == steps and set(report["evaluation"]) == {"genre", "mood"}
    assert report["export_check"]["tags_max_abs_diff"] < 1e-4

    capsys.readouterr()
    clip = next(manifest.parent.glob("audio/*/*.wav"))
    assert tagger_main(["analyze", str(clip), "--model", str(out), "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    (model,) = res["models"].values()
    assert set(model["tags"]) == {"jazz", "rock"} and abs(sum(model["tags"].values()) - 1) < 1e-4  # softmax genre


def test_a_killed_run_resumes_from_its_checkpoint(manifest, tmp_path):
    from exporter.training.data import load
    from exporter.training.loop import TrainConfig, train

    cfg = TrainConfig(arch="lstm", epochs=2, batch=4, windows_per_track=1, seed=3)
    ck = tmp_path / "run.ckpt"
    first = train(load(manifest), TrainConfig(**{**cfg.__dict__, "epochs": 1}), tmp_path / "a.onnx", checkpoint=ck)
    assert first["epochs"] == 1 and ck.is_file()
    with pytest.raises(ValueError, match="another configuration"):  # a checkpoint never mixes with other settings
        train(load(manifest), TrainConfig(**{**cfg.__dict__, "seed": 4}), tmp_path / "x.onnx", checkpoint=ck,
              resume=True)
    # epochs=2 with the same settings: "epochs" is the only difference, and it is allowed to grow
    resumed = train(load(manifest), cfg, tmp_path / "b.onnx", checkpoint=ck, resume=True)
    fresh = train(load(manifest), cfg, tmp_path / "c.onnx")
    assert resumed["epochs"] == 2 and resumed["history"][0] == first["history"][0]
    assert resumed["history"][1]["validation_loss"] == pytest.approx(fresh["history"][1]["validation_loss"], rel=1e-4)
