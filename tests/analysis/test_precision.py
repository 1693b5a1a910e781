"""int8 variants: the rewrite's arithmetic, the shipped variants against float on real music, and how the
runtime chooses (CPU features, the pinned float file, what each setting may fall back to)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from conftest import AUDIO, EXPORTER_DATA  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from exporter import quantize  # noqa: E402
from tagger.errors import ModelError  # noqa: E402
from tagger.models import session as tagger_model  # noqa: E402
from tagger.models.session import BUNDLED_DIR, VARIANT_KEY, Model, load_model  # noqa: E402

VARIANTS = sorted(p.stem for p in (BUNDLED_DIR / "int8").glob("*.onnx"))
FAST_CPU = frozenset({"avx512f", "avx512_vnni"})
OLD_CPU = frozenset({"avx2", "fma"})


def _conv_max_model(weights: np.ndarray, bias: np.ndarray, freq_axis: int) -> onnx.ModelProto:
    """x (B, 1, H, W) -> Conv (no padding) -> ReduceMax over ``freq_axis``: the pattern the pass rewrites."""
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="/conv/Conv"),
         helper.make_node("ReduceMax", ["y"], ["out"], name="/ReduceMax", axes=[freq_axis], keepdims=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", None, None])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _run(blob: bytes, x: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(names, {"x": x})


def _rewrite_and_run(model: onnx.ModelProto, x: np.ndarray, freq_axis: int) -> tuple:
    """The one conv-and-max site of ``model`` found, calibrated on ``x``, rewritten and run on ``x``:
    (its input range, the rewritten graph's output)."""
    sites = quantize.find_sites(model)
    assert [s.freq_axis for s in sites] == [freq_axis]
    ranges = quantize.input_ranges(model, sites, [x], lambda blob, batch, names: _run(blob, batch, names))
    (r,) = ranges.values()
    rewritten = quantize.rewrite(model, sites, ranges)
    assert "Conv" not in [n.op_type for n in rewritten.graph.node]
    return r, _run(rewritten.SerializeToString(), x)[0]


@pytest.mark.parametrize("freq_axis", [3, 2])
def test_rewrite_is_exact_integer_arithmetic(freq_axis):
    """The rewritten graph computes max over frequency of sum((xq - zp) * wq) * scale + bias exactly: the
    only approximations are the 8-bit input and weights, nothing after the integer sums."""
    rng = np.random.default_rng(1)
    kt, kf, c = 3, 5, 6
    w = rng.standard_normal((c, 1, kt, kf)).astype(np.float32)
    w_graph = w if freq_axis == 3 else w.transpose(0, 1, 3, 2).copy()
    b = rng.standard_normal(c).astype(np.float32)
    model = _conv_max_model(w_graph, b, freq_axis)
    x = rng.uniform(-1.0, 2.0, (2, 1, 12, 16)).astype(np.float32)  # (B, 1, time, freq)
    x_graph = x if freq_axis == 3 else x.transpose(0, 1, 3, 2).copy()
    rng_, got = _rewrite_and_run(model, x_graph, freq_axis)
    assert (rng_.low, rng_.high) == (pytest.approx(float(x.min())), pytest.approx(float(x.max())))

    # the same arithmetic in numpy
    scale, zp = quantize._u8_params(rng_.low, rng_.high)
    xq = np.clip(np.round(x[:, 0] / scale) + zp, 0, 255).astype(np.int64) - zp  # (B, T, F)
    w_scale = np.abs(w).reshape(c, -1).max(1) / 127.0
    wq = np.clip(np.round(w[:, 0] / w_scale[:, None, None]), -127, 127).astype(np.int64)  # (C, kt, kf)
    t_out, f_out = x.shape[2] - kt + 1, x.shape[3] - kf + 1
    acc = np.zeros((2, c, t_out, f_out), np.int64)
    for dt in range(kt):
        for df in range(kf):
            acc += wq[None, :, dt, df, None, None] * xq[:, None, dt:dt + t_out, df:df + f_out]
    want = acc.max(axis=3) * (np.float32(scale) * w_scale.astype(np.float32))[None, :, None] + b[None, :, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and close to the float model it replaces
    ref = _run(model.SerializeToString(), x_graph)[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def _block_model(weights: np.ndarray, bias: np.ndarray, pool: tuple[int, int]) -> onnx.ModelProto:
    """x (B, C, H, W) -> Conv (3 x 3, 'same') -> Relu -> MaxPool (stride = kernel): an FCN block."""
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="/block/Conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["y"], ["r"], name="/block/Relu"),
         helper.make_node("MaxPool", ["r"], ["out"], name="/block/MaxPool", kernel_shape=list(pool),
                          strides=list(pool))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", weights.shape[1], None, None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", weights.shape[0], None, None])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_block_rewrite_is_exact_integer_arithmetic():
    """A conv block becomes relu(max over each pool cell of sum((xq - zp) * wq) * scale + bias), with the
    padding exactly zero, and the positions no pool cell covers never computed."""
    rng = np.random.default_rng(2)
    c, o, pool = 8, 5, (2, 3)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    model = _block_model(w, b, pool)
    x = rng.uniform(-0.5, 2.0, (2, c, 7, 11)).astype(np.float32)  # 7 x 11: a row and two columns left over
    sites = quantize.find_sites(model)
    assert [type(s) for s in sites] == [quantize.BlockSite]
    ranges = quantize.input_ranges(model, sites, [x], lambda blob, batch, names: _run(blob, batch, names))
    assert quantize.usable(sites, ranges) == []  # 77 positions: too few to gain, so a real export skips it
    (r,) = ranges.values()
    assert r.shape == (c, 7, 11)
    rewritten = quantize.rewrite(model, sites, ranges)
    assert not {"Conv", "MaxPool"} & {n.op_type for n in rewritten.graph.node}
    got = _run(rewritten.SerializeToString(), x)[0]

    scale, zp = quantize._u8_params(r.low, r.high)
    xq = np.clip(np.round(x / scale) + zp, 0, 255).astype(np.int64) - zp
    xq = np.pad(xq, ((0, 0), (0, 0), (1, 1), (1, 1)))  # the zero point stands for 0.0
    w_scale = np.abs(w).reshape(o, -1).max(1) / 127.0
    wq = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int64)
    acc = np.zeros((2, o, 7, 11), np.int64)
    for dy in range(3):
        for dx in range(3):
            acc += np.einsum("oc,bchw->bohw", wq[:, :, dy, dx], xq[:, :, dy:dy + 7, dx:dx + 11])
    cells = acc[:, :, :6, :9].reshape(2, o, 3, 2, 3, 3).max(axis=(3, 5))
    want = np.maximum(cells * (np.float32(scale) * w_scale.astype(np.float32))[None, :, None, None]
                      + b[None, :, None, None], 0)
    assert got.shape == (2, o, 3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ref = _run(model.SerializeToString(), x)[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("freq_axis", [3, 2])
@pytest.mark.parametrize("frames", [8 + 2 * quantize.TIME_GROUP, 30, 13])  # whole groups, a padded last one, one short group
def test_temporal_rewrite_is_exact_integer_arithmetic(freq_axis, frames):
    """A one-bin filter over time (musicnn's temporal branches), computed a group of time positions per row:
    max over frequency of sum((xq - zp) * wq) * scale + bias, the same integers position by position."""
    rng = np.random.default_rng(3)
    kt, c = 9, 4
    w = rng.standard_normal((c, 1, kt, 1)).astype(np.float32)
    w_graph = w if freq_axis == 3 else w.transpose(0, 1, 3, 2).copy()
    b = rng.standard_normal(c).astype(np.float32)
    model = _conv_max_model(w_graph, b, freq_axis)
    x = rng.uniform(-1.0, 2.0, (2, 1, frames, 16)).astype(np.float32)  # (B, 1, time, freq)
    x_graph = x if freq_axis == 3 else x.transpose(0, 1, 3, 2).copy()
    r, got = _rewrite_and_run(model, x_graph, freq_axis)

    scale, zp = quantize._u8_params(r.low, r.high)
    xq = np.clip(np.round(x[:, 0] / scale) + zp, 0, 255).astype(np.int64) - zp  # (B, T, F)
    w_scale = np.abs(w).reshape(c, -1).max(1) / 127.0
    wq = np.clip(np.round(w[:, 0, :, 0] / w_scale[:, None]), -127, 127).astype(np.int64)  # (C, kt)
    t_out = frames - kt + 1
    acc = sum(wq[None, :, dt, None, None] * xq[:, None, dt:dt + t_out, :] for dt in range(kt))  # (B, C, T, F)
    want = acc.max(axis=3) * (np.float32(scale) * w_scale.astype(np.float32))[None, :, None] + b[None, :, None]
    assert got.shape == (2, c, t_out)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ref = _run(model.SerializeToString(), x_graph)[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_sites_skip_padded_convolutions():
    rng = np.random.default_rng(2)
    padded = _conv_max_model(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), np.zeros(4, np.float32), 3)
    padded.graph.node[0].attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
    assert quantize.find_sites(padded) == []


def _clips() -> list[Path]:
    shared = sorted(AUDIO.glob("*.ogg")) if AUDIO.is_dir() else []
    return shared or sorted(EXPORTER_DATA.glob("*.ogg"))


@pytest.mark.slow
@pytest.mark.parametrize("model_id", VARIANTS)
def test_shipped_variants_agree_with_float_on_real_music(model_id):
    """The bar a variant ships under, re-checked on the shared clips (the exporter's two clips without
    ../shared): song-level tags within 0.01, embedding cosine >= 0.999, the same top five labels (a
    difference only between labels the float model scores within 0.01 of each other)."""
    from tagger.analysis.cut import decode_windows

    # No arenas and 16 windows a call: a whole clip in one call held 1.1 GB of activations (make test < 2 GB).
    ref = load_model(model_id, device="cpu", precision="float", memory="lean")
    var = load_model(model_id, device="cpu", precision="int8", memory="lean")

    def run(model, x):
        parts = [model.run(x[i:i + 16]) for i in range(0, len(x), 16)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    assert (ref.precision, var.precision) == ("float", "int8")
    assert var.card == ref.card
    v = quantize.Verification()
    for clip in _clips():
        windows: list[np.ndarray] = []
        decode_windows(clip, [ref.card], [0], 0, lambda _i, w: windows.append(w))
        x = np.stack(windows)
        quantize.compare_song(clip.name, run(ref, x), run(var, x), v)
    assert v.files >= 2
    assert v.passed(), v.as_dict()
    assert v.min_embedding_cosine >= 0.999
    stored = json.loads({p.key: p.value for p in onnx.load(str(var.file)).metadata_props}[VARIANT_KEY])
    assert stored["verification"]["files"] >= 30 and stored["verification"]["max_tag_diff"] <= 0.01


def _pair(tmp_path: Path, model_id: str = "musicnn-msd") -> Path:
    (tmp_path / "int8").mkdir()
    shutil.copy(BUNDLED_DIR / f"{model_id}.onnx", tmp_path / f"{model_id}.onnx")
    shutil.copy(BUNDLED_DIR / "int8" / f"{model_id}.onnx", tmp_path / "int8" / f"{model_id}.onnx")
    return tmp_path / f"{model_id}.onnx"


def test_runtime_chooses_by_cpu_features_and_setting(tmp_path, monkeypatch):
    path = _pair(tmp_path)
    monkeypatch.setattr(tagger_model, "cpu_flags", lambda: FAST_CPU)
    auto = Model(path, device="cpu", precision="auto")
    assert auto.precision == "int8" and auto.file == tmp_path / "int8" / path.name and auto.path == path
    assert "avx512_vnni" in auto.precision_reason
    assert Model(path, device="cpu", precision="float").precision == "float"
    assert Model(path, device="cpu").precision == "float"  # the library default is the reference model

    monkeypatch.setattr(tagger_model, "cpu_flags", lambda: OLD_CPU)
    old = Model(path, device="cpu", precision="auto")
    assert old.precision == "float" and "lacks" in old.precision_reason
    with pytest.raises(ModelError, match="int8 requested but CPU lacks"):
        Model(path, device="cpu", precision="int8")
    with pytest.raises(ModelError, match="precision"):
        Model(path, device="cpu", precision="bf16")


def test_a_variant_is_used_only_beside_the_float_file_it_was_verified_from(tmp_path, monkeypatch, caplog):
    path = _pair(tmp_path)
    monkeypatch.setattr(tagger_model, "cpu_flags", lambda: FAST_CPU)
    m = onnx.load(str(path))
    m.doc_string += " (re-exported)"  # any change to the float file
    onnx.save(m, str(path))
    stale = Model(path, device="cpu", precision="auto")
    assert stale.precision == "float" and "another version" in stale.precision_reason
    assert "not used" in caplog.text
    with pytest.raises(ModelError, match="int8 requested"):
        Model(path, device="cpu", precision="int8")
    (tmp_path / "int8" / path.name).unlink()
    assert Model(path, device="cpu", precision="auto").precision_reason == "no int8 variant"


def test_config_and_command_line_select_precision(tmp_path, monkeypatch):
    from tagger.cli import build_parser
    from tagger.cli.options import settings_from as _config

    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("precision: float\n")
    args = build_parser().parse_args(["scan", "--config", str(cfg_file)])
    assert _config(args).precision == "float"
    args = build_parser().parse_args(["scan", "--config", str(cfg_file), "--model-precision", "int8"])
    assert _config(args).precision == "int8"
    cfg_file.write_text("precision: half\n")
    from tagger.config import ConfigError

    with pytest.raises(ConfigError, match="precision"):
        _config(build_parser().parse_args(["scan", "--config", str(cfg_file)]))


@pytest.mark.slow
def test_exporter_writes_nothing_when_the_variant_misses_the_bar(tmp_path, monkeypatch):
    from exporter.zoo import verification_audio
    from tagger.analysis.cut import decode_windows
    from tagger.analysis.windows import iter_windows

    card = load_model("musicnn-msd", device="cpu").card
    calib = [np.stack(list(iter_windows([clip], card)))[:4] for clip in verification_audio()]
    songs = []
    for clip in sorted(EXPORTER_DATA.glob("*.ogg")):
        windows: list[np.ndarray] = []
        decode_windows(clip, [card], [0], 4, lambda _i, w: windows.append(w))
        songs.append((clip.name, np.stack(windows)))
    out = tmp_path / "int8" / "musicnn-msd.onnx"
    monkeypatch.setattr(quantize, "TAG_TOLERANCE", 1e-6)
    with pytest.raises(quantize.QuantizeError, match="misses the bar") as err:
        quantize.build_int8_variant(BUNDLED_DIR / "musicnn-msd.onnx", out, calib, songs)
    assert "with the temporal filters" in str(err.value) and "without the temporal filters" in str(err.value)
    assert not out.exists() and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(quantize, "TAG_TOLERANCE", 0.01)
    # The whole rewrite missing the bar falls back to the one without the temporal filters.
    verdicts = iter([False, True])
    monkeypatch.setattr(quantize.Verification, "passed", lambda self: next(verdicts))
    quantize.build_int8_variant(BUNDLED_DIR / "musicnn-msd.onnx", out, calib, songs)
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[VARIANT_KEY])
    assert meta["quantised"] and not any("temporal" in name for name in meta["quantised"])
    monkeypatch.undo()
    out.unlink()
    v = quantize.build_int8_variant(BUNDLED_DIR / "musicnn-msd.onnx", out, calib, songs)
    assert v.passed() and out.exists() and oct(out.stat().st_mode & 0o777) == "0o644"
    assert Model(BUNDLED_DIR / "musicnn-msd.onnx", device="cpu").precision == "float"
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[VARIANT_KEY])
    assert meta["reference_sha256"] == tagger_model.sha256_file(BUNDLED_DIR / "musicnn-msd.onnx")


def test_memory_modes_give_the_same_numbers():
    """shared (one arena for every session), lean (none) and fast (one per session) change where
    intermediate tensors live, never the results."""
    x = (np.random.default_rng(3).standard_normal((3, 48128)) * 0.1).astype(np.float32)
    outs = {mode: load_model("musicnn-jamendo", device="cpu", memory=mode).run_all(x[:, :48000]) for mode in
            ("shared", "lean", "fast")}
    for mode in ("lean", "fast"):
        for name, value in outs["shared"].items():
            np.testing.assert_allclose(value, outs[mode][name], rtol=1e-6, atol=1e-6)
    with pytest.raises(ModelError, match="memory"):
        load_model("musicnn-jamendo", device="cpu", memory="tiny")
