"""`tagger batch` on a real local Ray: the stages against the engine, manifests, incremental Parquet, results
equal to `tagger scan` on 20+ real files with bad ones among them, a run killed half way that resumes without
redoing finished tracks, the way back into a library database, and the similarity index's recall."""
from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from audiofiles import music_like, write_audio
from conftest import EXPORTER_DATA, ROOT

from tagger.analysis.engine import Engine
from tagger.config import load_config
from tagger.errors import ConfigError
from tagger.fsutil import path_key
from tagger.library.store import Store
from tagger.models.session import load_model
from tagger.pipeline.scanner import scan

ray = pytest.importorskip("ray")
pytest.importorskip("faiss")
pa = pytest.importorskip("pyarrow")

from tagger.batch import results as res  # noqa: E402
from tagger.batch.importer import import_results  # noqa: E402
from tagger.batch.index import Index, IndexParams, write_index  # noqa: E402
from tagger.batch.job import BatchOptions, run_batch  # noqa: E402
from tagger.batch.manifest import collect_items, read_manifest  # noqa: E402
from tagger.batch.stages import Item, default_id, infer, prepare  # noqa: E402

MODELS = ("musicnn-msd", "fcn-jamendo")  # two kinds of card: 3-s and 29-s windows


@pytest.fixture(scope="module")
def models():
    # precision as the batch actors choose it (auto, on this same CPU), so scan and batch run the same files
    return [load_model(m, device="cpu", threads=2, precision="auto") for m in MODELS]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """22 files: 2 real recordings, 17 generated in five formats, and 3 bad ones."""
    lib = tmp_path_factory.mktemp("batch") / "lib"
    lib.mkdir()
    for clip in sorted(EXPORTER_DATA.glob("*.ogg")):
        shutil.copy(clip, lib / clip.name)
    fmts = [".flac", ".mp3", ".ogg", ".wav", ".m4a"]
    for i in range(17):
        write_audio(lib / f"gen{i:02d}{fmts[i % 5]}", music_like(3.5 + 0.5 * i, 22050, 1, seed=i), 22050)
    (lib / "not-audio.mp3").write_bytes(b"this is a text file, not an MP3\n" * 50)
    good = (lib / "gen00.flac").read_bytes()
    (lib / "truncated.flac").write_bytes(good[:300])  # the header survives, the audio does not
    (lib / "empty.ogg").write_bytes(b"")
    return lib


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


# -- the stages, without Ray ---------------------------------------------------------------------------
def test_stages_reproduce_the_engine(models):
    clip = next(EXPORTER_DATA.glob("Hungarian*.ogg"))
    (want,) = list(Engine(models, max_windows=32).analyse([clip]))
    row = prepare(Item("x", str(clip)), [m.card for m in models], max_windows=32)
    assert row["status"] == "ok" and row["w0"].dtype == np.float32 and row["w0"].shape[1] == models[0].card.window
    got = {r["model"]: r for r in infer(models, row)}
    for m in models:
        r = got[m.card.id]
        assert r["status"] == "ok" and r["windows"] == want.models[m.card.id].n_windows
        np.testing.assert_allclose(r["tags"], want.models[m.card.id].tags, atol=1e-5)
        np.testing.assert_allclose(r["embedding"], want.models[m.card.id].embedding, atol=1e-5)
    assert row["fingerprint"] == want.fingerprint


def test_a_bad_file_is_a_row_with_its_reason(models, library):
    for name in ("not-audio.mp3", "truncated.flac", "empty.ogg", "missing.flac"):
        row = prepare(Item("x", str(library / name)), [m.card for m in models], max_windows=32)
        assert row["status"] == "failed" and row["reason"], name
        assert row["w1"].shape == (0, models[1].card.window)
        out = infer(models, row)
        assert [r["status"] for r in out] == ["failed", "failed"] and out[0]["reason"] == row["reason"]


def test_manifests(tmp_path, library):
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Path"])
        w.writerow(["a1", str(library / "gen01.mp3")])
        w.writerow(["", "lib/gen02.ogg"])  # relative to the manifest; no id: one is made from the path
    (tmp_path / "lib").symlink_to(library)
    items = read_manifest(tmp_path / "m.csv")
    assert items[0] == Item("a1", str(library / "gen01.mp3"))
    assert items[1].path == path_key(tmp_path / "lib" / "gen02.ogg") and items[1].id == default_id(items[1].path)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"uri": [f"file://{library}/gen03.wav"]}), tmp_path / "m.parquet")
    assert read_manifest(tmp_path / "m.parquet")[0].path == f"file://{library}/gen03.wav"
    (tmp_path / "bad.csv").write_text("file\nx.mp3\n")
    with pytest.raises(ConfigError, match="'path' or 'uri' column"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("id,path\nsame,a.mp3\nsame,b.mp3\n")
    with pytest.raises(ConfigError, match="two tracks share this id"):
        collect_items([tmp_path / "dup.csv"], frozenset({".mp3"}))
    found = collect_items([library], load_config(None).extensions)
    assert len(found) == 22 and len({i.id for i in found}) == 22


def test_index_recall_with_exact_reranking(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 64)).astype(np.float32)
    vecs = centres[rng.integers(0, 20, 4000)] + 0.5 * rng.standard_normal((4000, 64)).astype(np.float32)
    meta = [{"id": str(i), "path": f"/m/{i}.flac", "duration": 1.0, "fingerprint": ""} for i in range(4000)]
    info = write_index(vecs, meta, tmp_path / "ix", {"model": "m", "analyser": "m@1"},
                       IndexParams(nlist=16, m=8, nprobe=8, rerank=200))
    assert info["kind"] == "ivfpq"
    index = Index(tmp_path / "ix")
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    hits = 0
    for q in range(50):
        exact = [int(i) for i in np.lexsort((np.arange(4000), -(unit @ unit[q])))[1:11]]
        got = [r for r, _ in index.search(unit[q], 10, exclude=q)]
        hits += len(set(exact) & set(got))
        scores = [s for _, s in index.search(unit[q], 10, exclude=q)]
        assert scores == sorted(scores, reverse=True)  # exact cosine order among the candidates
    assert hits / 500 >= 0.9
    small = write_index(vecs[:50], meta[:50], tmp_path / "small", {"model": "m", "analyser": "m@1"}, IndexParams())
    assert small["kind"] == "flat"  # too few tracks to train a quantiser


# -- on Ray --------------------------------------------------------------------------------------------
def test_batch_equals_scan_and_imports_back(tmp_path, models, library, local_ray, msd_model):
    items = collect_items([library], load_config(None).extensions)
    out = tmp_path / "results"
    report = run_batch(items, models, BatchOptions(output=out, rows_per_part=8, actors=1))
    assert report.ok == 19 and len(report.failed) == 3 and report.skipped == 0
    assert {Path(p).name for p, _ in report.failed} == {"not-audio.mp3", "truncated.flac", "empty.ogg"}
    assert len(res.parts(out)) >= 2  # written as it went, not at the end
    rows = res.latest_rows(out)
    assert len(rows) == 22 * len(models)
    assert set(res.read_cards(out)) == {m.card.id for m in models}
    # The same files through `tagger scan` (no tag writes): the same numbers.
    cfg = replace(load_config(None), database=tmp_path / "db", write_enabled=False, models=MODELS)
    with Store(cfg.database) as store:
        scan([library], cfg, models, store)
        worst = 0.0
        for r in rows:
            rec = store.get(r["path"], r["model"])
            assert rec is not None and rec["status"] == r["status"], r["path"]
            if r["status"] == "ok":
                tags, emb = store.vectors(rec)
                worst = max(worst, float(np.abs(np.asarray(r["tags"]) - tags).max()),
                            float(np.abs(np.asarray(r["embedding"]) - emb).max()))
                assert rec["fingerprint"] == r["fingerprint"] and rec["windows"] == r["windows"]
    assert worst <= 1e-5, worst
    # Back into a fresh library database: serve and scan can use it without decoding again.
    db2 = replace(cfg, database=tmp_path / "db2", write_enabled=True)
    with Store(db2.database) as store:
        rep = import_results(out, store)
        assert rep.ok == 19 * len(models) and rep.failed == 3 * len(models)
        again = scan([library], db2, models, store)
    assert again.analysed == 0 and again.skipped == 3  # nothing decoded; the bad files keep their verdict
    assert again.redecided == 19 and again.written == 19  # decided and written from the imported vectors
    # The index over the results answers `tagger similar --index`.
    from tagger.cli import main

    assert main(["batch", "index", str(out), "-o", str(tmp_path / "ix")]) == 0
    ix = Index(tmp_path / "ix")
    seed = path_key(library / "gen03.wav")
    hits = ix.search(np.asarray(ix.unit[ix.row_of[seed]]), 5, exclude=ix.row_of[seed])
    assert len(hits) == 5 and all(ix.meta[r]["path"] != seed for r, _ in hits)


def test_a_killed_run_resumes_without_redoing_finished_tracks(tmp_path, library, models, local_ray):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tagger", "batch", "run", str(library), "-o", str(out), "--num-cpus", "2",
           "--model", MODELS[0], "--model", MODELS[1], "--rows-per-part", "2", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(res.parts(out)) < 1 or not res.finished(out, [m.card.analyser for m in models]):
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no results within 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait()
    before = res.finished(out, [m.card.analyser for m in models])
    assert 0 < len(before) < 22
    items = collect_items([library], load_config(None).extensions)
    report = run_batch(items, models, BatchOptions(output=out))
    assert report.skipped == len(before)
    assert report.ok + len(report.failed) == 22 - len(before)  # only the unfinished ones were analysed
    assert res.finished(out, [m.card.analyser for m in models]) == {i.id for i in items}
    assert not list(out.glob(".part-*.tmp"))


def test_a_pool_that_would_starve_decoding_is_refused(tmp_path, models, library, local_ray):
    items = collect_items([library / "gen01.mp3"], load_config(None).extensions)
    with pytest.raises(ConfigError, match="needs 3"):
        run_batch(items, models, BatchOptions(output=tmp_path / "r", actors=2, actor_cpus=1.0, decode_cpus=1.0))
    with pytest.raises(ConfigError, match="GPU"):
        run_batch(items, models, BatchOptions(output=tmp_path / "r", gpus_per_actor=2.0))


def test_empty_sources_and_results_are_clear_errors(tmp_path, capsys):
    from tagger.cli import main

    (tmp_path / "m.csv").write_text("path\n")
    assert main(["batch", "run", str(tmp_path / "m.csv"), "-o", str(tmp_path / "out")]) == 2
    assert "nothing to analyse" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["batch", "import", str(tmp_path / "empty"), "--database", str(tmp_path / "db")]) == 2
    assert "no batch results" in capsys.readouterr().err and not (tmp_path / "db").exists()
