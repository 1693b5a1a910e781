"""Shared front ends: models of a set that begin with the same computation run it once per batch, with the
same results as running each model whole."""
from __future__ import annotations

import json
import os
import time
import types

import numpy as np
import onnx
import pytest
from conftest import EXPORTER_DATA
from onnx import TensorProto, helper, numpy_helper

from tagger.analysis.decode import decode
from tagger.analysis.engine import Engine, TrackResult
from tagger.models.session import load_model
from tagger.models.shared_front import (
    _outer_refs,
    _read_split,
    _write_split,
    find_shared_fronts,
    session_device,
    split_shared_prefix,
)

BRAHMS = next(EXPORTER_DATA.glob("Hungarian*.ogg"))


@pytest.fixture(scope="module")
def default_set():
    names = ["musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat"]
    return [load_model(n, device="cpu", memory="shared", precision="auto") for n in names]


def test_the_bundled_fcns_share_their_front_end_and_give_the_same_outputs(default_set):
    fronts = find_shared_fronts(default_set)
    assert sorted(fronts) == [1, 3]  # fcn-jamendo and fcn-mtat; the musicnn models take other windows
    assert fronts[1] is fronts[3]
    audio = decode(BRAHMS, 16000).samples
    window = default_set[1].card.window
    real = np.resize(audio, window)[None]
    batches = [real, np.zeros((1, window), np.float32),
               (np.random.default_rng(1).standard_normal((1, window)) * 0.3).astype(np.float32)]
    shared = fronts[1]
    hits = shared.hits
    for x in batches:
        for i in (1, 3):
            model = default_set[i]
            whole = model.run_all(x)
            split = dict(zip(model.output_names, shared.run(model, x.copy(), model.output_names)))
            for name in whole:
                np.testing.assert_array_equal(whole[name], split[name])
    assert shared.hits - hits == len(batches)  # the second model of each pair reused the spectrogram
    # The spectrogram stays an onnxruntime value on the front session's device (I/O binding), not a copy in
    # numpy: on a GPU it never leaves it between the front end and the bodies.
    assert shared._last_out.device_name().lower() == session_device(shared.session) == "cpu"
    assert find_shared_fronts(default_set)[3] is shared  # analysed once, kept with the models


def test_a_different_batch_never_reuses_the_front_end(default_set):
    shared = find_shared_fronts(default_set)[1]
    model = default_set[3]
    a = np.zeros((1, model.card.window), np.float32)
    b = a.copy()
    b[0, 1000] = 0.5
    shared.run(default_set[1], a, default_set[1].output_names)
    hits = shared.hits
    got = dict(zip(model.output_names, shared.run(model, b, model.output_names)))
    assert shared.hits == hits
    np.testing.assert_array_equal(got["tags"], model.run_all(b)["tags"])


def test_a_scan_gives_the_same_results_with_and_without_sharing(default_set):
    def analyse(share: bool) -> TrackResult:
        engine = Engine(default_set, max_batch=4)
        if not share:
            engine.fronts = {}
        (res,) = list(engine.analyse([BRAHMS]))
        return res

    shared = find_shared_fronts(default_set)[1]
    hits = shared.hits
    with_ = analyse(True)
    assert shared.hits - hits == with_.models["fcn-mtat"].n_windows >= 2  # each 29-s window's spectrogram, reused
    without = analyse(False)
    for mid, mr in without.models.items():
        # Only float rounding may differ, from how windows happened to be batched (as between any two runs).
        np.testing.assert_allclose(with_.models[mid].tags, mr.tags, atol=1e-6)
        np.testing.assert_allclose(with_.models[mid].embedding, mr.embedding, atol=1e-5)


def _tiny(first_weight: float, second_weight: float) -> onnx.ModelProto:
    """x -> Mul(w1) -> Relu -> Mul(w2) -> y: the shared prefix depends on the weights, never on names."""
    nodes = [helper.make_node("Mul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Mul", ["b", "w2"], ["y"])]
    inits = [numpy_helper.from_array(np.array([first_weight], np.float32), "w1"),
             numpy_helper.from_array(np.array([second_weight], np.float32), "w2")]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_prefix_is_decided_by_computation_not_names():
    parts = split_shared_prefix(_tiny(2.0, 3.0), _tiny(2.0, 5.0))
    assert parts is not None
    front, body_a, body_b, cut_a, cut_b = parts
    assert cut_a == cut_b == "b"  # Mul(2) and Relu are shared; the second Mul differs
    assert split_shared_prefix(_tiny(2.0, 3.0), _tiny(4.0, 3.0)) is None  # different first weight: nothing shared


def test_subgraph_reads_from_outside_are_part_of_the_digest():
    inner = helper.make_graph([helper.make_node("Identity", ["outer_t"], ["r"])], "then", [],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1])])
    assert _outer_refs(inner) == {"outer_t"}


def test_the_split_is_cached_on_disk_and_a_damaged_cache_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setattr("tagger.models.shared_front.CACHE_ROOT", tmp_path / "tagger" / "fronts")
    names = ["fcn-jamendo", "fcn-mtat"]
    models = [load_model(n, device="cpu", memory="shared", precision="auto") for n in names]
    x = (np.random.default_rng(2).standard_normal((1, models[0].card.window)) * 0.2).astype(np.float32)
    first = find_shared_fronts(models)[0]
    (folder,) = (tmp_path / "tagger" / "fronts").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["body-a.onnx", "body-b.onnx", "cuts.json", "front.onnx"]
    expected = first.run(models[1], x, models[1].output_names)
    (folder / "cuts.json").write_text("{not json")  # a damaged cache, as a crash mid-write could leave
    again = [load_model(n, device="cpu", memory="shared", precision="auto") for n in names]  # a new process's view
    shared = find_shared_fronts(again)[1]
    for a, b in zip(expected, shared.run(again[1], x, again[1].output_names)):
        np.testing.assert_array_equal(a, b)
    assert json.loads((folder / "cuts.json").read_text())  # rebuilt


def test_a_pair_that_shares_nothing_is_remembered(tmp_path):
    files = []
    for k, w in enumerate((2.0, 4.0)):  # different first weights: nothing in common
        onnx.save(_tiny(w, 3.0), str(tmp_path / f"m{k}.onnx"))
        files.append(types.SimpleNamespace(file=tmp_path / f"m{k}.onnx"))
    old = tmp_path / "cache" / "left-behind"
    old.mkdir(parents=True)
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    folder = tmp_path / "cache" / "pair"
    assert _write_split(folder, *files) == {}
    assert _read_split(folder) == {}  # the next process does not compare the graphs again
    assert not old.exists()  # a split not written for a month is dropped
