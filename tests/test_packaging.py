"""The wheel people install: built from this checkout, installed alone into a clean venv, it tags the demo
clips. It holds the runtime and the default models, not the exporter's checkpoints, and carries the licences."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import EXPORTER_DATA, ROOT

pytestmark = pytest.mark.slow

WHEEL_LIMIT = 35 * 1024 * 1024


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(out)], check=True, timeout=600)
    (found,) = out.glob("onnx_music_tagger-*.whl")
    return found


def test_the_wheel_holds_the_runtime_and_the_licences_not_the_exporters_checkpoints(wheel):
    assert wheel.stat().st_size < WHEEL_LIMIT, f"{wheel.stat().st_size / 2**20:.1f} MB"
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".pth", ".pt", ".ogg"))]
    assert "tagger/config/default.yaml" in names and "tagger/serving/web/static/app.js" in names
    assert {f"tagger/models/bundled/{m}.onnx" for m in ("musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat",
                                                        "mn04-audioset")} <= set(names)
    licences = [n for n in names if ".dist-info/licenses/" in n]
    assert any(n.endswith("/LICENSE") for n in licences) and any("LICENSE-audioset" in n for n in licences)
    meta = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "Name: onnx-music-tagger" in meta and "License-Expression: MIT" in meta
    assert "Requires-Dist: onnxruntime>=" in meta and "onnxruntime-gpu" in meta.split("Provides-Extra: gpu")[1]


def test_the_wheel_alone_in_a_clean_venv_tags_the_demo_clips(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=900)
    lib = tmp_path / "lib"
    lib.mkdir()
    for clip in EXPORTER_DATA.glob("*.ogg"):
        shutil.copy(clip, lib / clip.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / "config"))
    run = subprocess.run([str(venv / "bin" / "tagger"), "scan", str(lib), "--database", str(tmp_path / "db"),
                          "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    import json

    report = json.loads(run.stdout)
    assert report["analysed"] == 2 and report["written"] == 2 and not report["failed"]
    assert "/site-packages/tagger/" in subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import tagger; print(tagger.__file__)"], capture_output=True, text=True,
        env=env, cwd=tmp_path, check=True).stdout  # the installed copy ran, not this checkout
