"""The PyTorch ports match the original musicnn outputs; the ONNX exports match end to end."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import EXPORTER_DATA, REFERENCE, needs_shared, reference_clips

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from exporter import ExportError, ModelCard, export_onnx, read_card  # noqa: E402
from exporter.zoo import MODELS, build_published, verification_audio  # noqa: E402

VARIANT_DIR = {"musicnn-msd": "MSD_musicnn", "musicnn-mtt": "MTT_musicnn", "vgg-msd": "MSD_vgg", "vgg-mtt": "MTT_vgg"}


@pytest.fixture(scope="module")  # four torch models: released when this file is done (the suite stays under 2 GB)
def modules(weights_archive):
    return {mid: build_published(mid, weights_archive) for mid in MODELS}


@pytest.fixture(scope="module")
def exported(modules, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    audio = verification_audio()
    paths = {}
    for mid, (module, card) in modules.items():
        paths[mid] = out / f"{mid}.onnx"
        export_onnx(module, card, paths[mid], verify_audio=audio)
    return paths


def _forward(module, batch, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(tags, embedding) of a batch of log-mel windows, a few windows at a time: the whole clip in one call
    held several hundred MB of activations (make test stays under 2 GB)."""
    with torch.no_grad():
        parts = [module.forward_logmel(batch[i:i + chunk]) for i in range(0, len(batch), chunk)]
    return (np.concatenate([p[0].numpy() for p in parts]), np.concatenate([p[1].numpy() for p in parts]))


def _frontend():
    return np.load(REFERENCE / "frontend" / "Kevin_MacLeod_-_Vibe_Ace.npz")


@needs_shared
@pytest.mark.parametrize("model_id", list(VARIANT_DIR))
def test_network_matches_reference_on_logmel(modules, weights_archive, model_id):
    module, _ = modules[model_id]
    ref = np.load(REFERENCE / VARIANT_DIR[model_id] / "Kevin_MacLeod_-_Vibe_Ace.npz")
    batch = torch.from_numpy(_frontend()["batch"])
    tags, emb = _forward(module, batch)
    expected = ref["taggram_as_trained_arch"] if model_id == "vgg-msd" else ref["taggram"]
    assert np.abs(tags - expected).max() <= 1e-5
    if model_id.startswith("musicnn"):
        ref_emb = ref["penultimate"]
    else:
        ref_emb = ref["pool5"].reshape(len(tags), -1)  # rows 2i, 2i+1 = patch i, time-major
    if model_id == "vgg-msd":
        # The stored pool5 (and taggram) come from the pooling musicnn 0.1.0 actually runs.
        from exporter.musicnn import Vgg

        shipped = Vgg(50).load_tf(weights_archive.checkpoint("MSD_vgg", "MSD").tensors).eval()
        shipped_tags, emb = _forward(shipped, batch)
        assert np.abs(shipped_tags - ref["taggram"]).max() <= 1e-5
    assert np.abs(emb - ref_emb).max() / np.abs(ref_emb).max() <= 1e-4


@needs_shared
@pytest.mark.parametrize("model_id", ["musicnn-msd", "musicnn-mtt"])
def test_spectral_timbral_branches_equal_the_direct_convolutions(weights_archive, model_id):
    direct, _ = build_published(model_id, weights_archive)  # what is shipped: plain convolutions
    fast, _ = build_published(model_id, weights_archive, spectral=True)
    assert fast.spectral is not None and direct.spectral is None
    batch = torch.from_numpy(_frontend()["batch"])
    (t1, e1), (t2, e2) = _forward(direct, batch), _forward(fast, batch)
    assert np.abs(t1 - t2).max() <= 2e-6
    assert np.abs(e1 - e2).max() / np.abs(e1).max() <= 2e-5


@needs_shared
def test_mel_frontend_matches_reference():
    from exporter.frontend import LogMel

    fe = _frontend()
    with torch.no_grad():
        got = LogMel()(torch.from_numpy(np.pad(fe["audio_16k"], (256, 256)))[None])[0].numpy()
    assert got.shape == fe["log_mel"].shape
    assert np.abs(got - fe["log_mel"]).max() <= 5e-4


@needs_shared
@pytest.mark.parametrize("model_id", list(VARIANT_DIR))
def test_onnx_end_to_end_matches_reference_on_every_clip(exported, model_id):
    from tagger.analysis.engine import Engine
    from tagger.models.session import Model

    engine = Engine(Model(exported[model_id], device="cpu", threads=2, memory="lean"), keep_window_tags=True)
    clips = reference_clips()
    assert clips
    results = {r.path: r for r in engine.analyse(clips)}
    for clip in clips:
        ref = np.load(REFERENCE / VARIANT_DIR[model_id] / f"{clip.stem}.npz")
        expected = ref["taggram_as_trained_arch"] if model_id == "vgg-msd" else ref["taggram"]
        got = results[clip].window_tags
        assert got.shape == expected.shape, clip.name
        assert np.abs(got - expected).max() <= 1e-4, clip.name


def test_batch_size_does_not_change_outputs(exported):
    import onnxruntime as ort

    clips = verification_audio()
    windows = []
    for clip in clips:
        padded = np.pad(clip, (256, 256))
        windows += [padded[s:s + 48128] for s in range(0, len(padded) - 48128 + 1, 47872)]
    rng = np.random.default_rng(3)
    n = 16  # enough for uneven batches; 64 windows of the float model took 1.3 GB of arena
    while len(windows) < n:
        windows.append((rng.standard_normal(48128) * 0.1).astype(np.float32))
    windows = np.stack(windows[:n]).astype(np.float32)
    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = False  # give the memory back after each run (the suite stays under 2 GB)
    sess = ort.InferenceSession(str(exported["musicnn-msd"]), opts, providers=["CPUExecutionProvider"])
    full_tags, full_emb = sess.run(["tags", "embedding"], {"waveform": windows})
    for bs in (1, 5):
        parts = [sess.run(["tags", "embedding"], {"waveform": windows[i:i + bs]}) for i in range(0, n, bs)]
        tags = np.concatenate([p[0] for p in parts])
        emb = np.concatenate([p[1] for p in parts])
        assert np.abs(tags - full_tags).max() <= 1e-6
        assert np.abs(emb - full_emb).max() <= 1e-6 * max(1.0, np.abs(full_emb).max())


def test_metadata_makes_the_file_self_describing(exported):
    card = read_card(exported["musicnn-msd"])
    assert card["schema"] == 2 and card["id"] == "musicnn-msd"
    tags, emb = card["outputs"]
    assert tags["name"] == "tags" and tags["kind"] == "sigmoid" and emb["kind"] == "embedding"
    assert len(tags["labels"]) == 50 and "Mellow" in tags["labels"] and "jazz" in tags["labels"]
    assert tags["groups"]["jazz"] == "genre" and tags["groups"]["Mellow"] == "mood" and tags["groups"]["80s"] == "era"
    assert (card["sample_rate"], card["window"], card["hop"], card["pad_start"]) == (16000, 48128, 47872, 256)
    assert card["short_input"] == "repeat" and card["partial_tail"] == "drop" and card["resampler"] == "soxr-hq"
    assert emb["dim"] == 200
    assert len(card["source"]["wheel_sha256"]) == 64 and card["licence"] == "ISC" and "Pompeu Fabra" in card["licence_text"]
    assert read_card(exported["vgg-mtt"])["outputs"][1]["dim"] == 256


@pytest.mark.parametrize("model_id", ["musicnn-msd", "musicnn-mtt"])
def test_bundled_models_are_reproduced_by_a_fresh_export(exported, model_id):
    """The committed ONNX files are exactly what the exporter makes: same weights, metadata, outputs."""
    from conftest import assert_same_onnx

    from tagger.models.session import BUNDLED_DIR

    assert_same_onnx(exported[model_id], BUNDLED_DIR / f"{model_id}.onnx")


class _Tiny(torch.nn.Module):
    """A user's own conforming model: 2 labels, embedding of 3."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 3)
        self.out = torch.nn.Linear(3, 2)

    def forward(self, waveform):
        feats = waveform.reshape(waveform.shape[0], 16, -1).abs().mean(-1)
        emb = torch.relu(self.lin(feats))
        return torch.sigmoid(self.out(emb)), emb


def _tiny_card(**kw):
    base = dict(id="tiny", version="1", labels=["a", "b"], sample_rate=8000, window=1600, hop=800, embedding_dim=3)
    base.update(kw)
    return ModelCard(**base)


def test_user_module_exports_and_plugs_into_the_runtime(tmp_path):
    from tagger.models.session import Model

    path = tmp_path / "tiny.onnx"
    export_onnx(_Tiny(), _tiny_card(), path)
    model = Model(path, device="cpu", threads=1)
    assert model.spec.labels == ("a", "b") and model.spec.window == 1600
    tags, emb = model.run(np.zeros((3, 1600), np.float32))
    assert tags.shape == (3, 2) and emb.shape == (3, 3)


def test_export_refuses_a_card_that_does_not_fit(tmp_path):
    with pytest.raises(ExportError, match="expected"):
        export_onnx(_Tiny(), _tiny_card(labels=["a", "b", "c"]), tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="unique"):
        export_onnx(_Tiny(), _tiny_card(labels=["a", "a"]), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_export_refuses_when_onnxruntime_disagrees(tmp_path, monkeypatch):
    import exporter.export as ex

    real = ex.verify_onnx

    def strict(path, module, windows, **kw):
        return real(path, module, windows, atol=-1.0)  # impossible tolerance: must refuse

    monkeypatch.setattr(ex, "verify_onnx", strict)
    with pytest.raises(ExportError, match="disagrees"):
        export_onnx(_Tiny(), _tiny_card(), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_verification_clips_ship_with_attribution():
    assert (EXPORTER_DATA / "ATTRIBUTION.md").read_text().count("CC BY 3.0") >= 1
    assert len(verification_audio()) == 2


def test_offline_without_a_cached_wheel_says_what_to_do(tmp_path, monkeypatch):
    import subprocess

    from exporter.weights import WeightsUnavailable, fetch_wheel

    def offline(*args, **kwargs):
        return subprocess.CompletedProcess(args[0], 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(WeightsUnavailable) as info:
        fetch_wheel(tmp_path / "cache")
    msg = str(info.value)
    assert "pip download musicnn==0.1.0 --no-deps" in msg and "--weights" in msg and str(tmp_path / "cache") in msg


def test_weights_from_an_unpacked_folder_equal_the_wheel(weights_archive, tmp_path):
    import zipfile

    from exporter.weights import WeightsArchive

    with zipfile.ZipFile(weights_archive.location) as z:
        z.extractall(tmp_path)
    folder = WeightsArchive(tmp_path)
    a = folder.checkpoint("MTT_vgg", "MTT")
    b = weights_archive.checkpoint("MTT_vgg", "MTT")
    assert a.labels == b.labels and a.tensors.keys() == b.tensors.keys()
    assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.source["checkpoint_sha256"] == b.source["checkpoint_sha256"]


class _TwoHeads(torch.nn.Module):
    """A genre + mood network in the style of the multi-output CNNs: sigmoid genres, softmax mood, embedding."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 4)
        self.genre = torch.nn.Linear(4, 3)
        self.mood = torch.nn.Linear(4, 2)

    def forward(self, waveform):
        emb = torch.relu(self.lin(waveform.reshape(waveform.shape[0], 16, -1).abs().mean(-1)))
        return torch.sigmoid(self.genre(emb)), torch.softmax(self.mood(emb), dim=1), emb


def test_a_card_with_several_named_outputs_exports_and_runs(tmp_path):
    from tagger.analysis.engine import Engine
    from tagger.models.card import Card, Output
    from tagger.models.session import Model

    card = Card(id="two-heads", version="1", sample_rate=8000, window=1600, hop=1600, outputs=(
        Output("genre", "sigmoid", ("rock", "jazz", "classical"), {"rock": "genre", "jazz": "genre", "classical": "genre"}),
        Output("valence", "softmax", ("sad", "happy"), {"sad": "mood", "happy": "mood"}),
        Output("embedding", "embedding", dim=4)))
    path = tmp_path / "two.onnx"
    export_onnx(_TwoHeads(), card, path)
    model = Model(path, device="cpu", threads=1)
    assert [o.name for o in model.card.outputs] == ["genre", "valence", "embedding"]
    out = model.run_all(np.random.default_rng(0).standard_normal((2, 1600)).astype(np.float32))
    assert out["valence"].shape == (2, 2) and np.allclose(out["valence"].sum(1), 1, atol=1e-5)
    wav = tmp_path / "t.wav"
    from audiofiles import music_like, write_audio

    write_audio(wav, music_like(1.0, 8000, 1), 8000)
    (res,) = list(Engine(model).analyse([wav]))
    got = res.models["two-heads"]
    assert set(got.outputs) == {"genre", "valence", "embedding"} and got.tags.shape == (3,)
    assert got.embedding.shape == (4,)


def test_card_validation_names_the_problem():
    from tagger.models.card import Card, CardError, Output

    base = dict(id="x", version="1", sample_rate=16000, window=10, hop=10)
    with pytest.raises(CardError, match="at least one label output"):
        Card(outputs=(Output("e", "embedding", dim=3),), **base).validate()
    with pytest.raises(CardError, match="groups name unknown labels"):
        Card(outputs=(Output("t", "sigmoid", ("a",), {"b": "genre"}),), **base).validate()
    with pytest.raises(CardError, match="partial_tail"):
        Card(outputs=(Output("t", "sigmoid", ("a",)),), partial_tail="wrap", **base).validate()
    with pytest.raises(CardError, match="schema"):
        Card.from_json('{"schema": 9}')


def test_the_batch_stages_keep_every_head_of_a_multi_output_card(tmp_path):
    """`tagger batch` stores each label output by name (a genre head and a mood head), equal to the engine's."""
    from audiofiles import music_like, write_audio

    from tagger.analysis.engine import Engine
    from tagger.batch.stages import Item, infer, prepare
    from tagger.models.card import Card, Output
    from tagger.models.session import Model

    card = Card(id="two-heads", version="1", sample_rate=8000, window=1600, hop=1600, outputs=(
        Output("genre", "sigmoid", ("rock", "jazz", "classical")), Output("valence", "softmax", ("sad", "happy")),
        Output("embedding", "embedding", dim=4)))
    export_onnx(_TwoHeads(), card, tmp_path / "two.onnx")
    model = Model(tmp_path / "two.onnx", device="cpu", threads=1)
    wav = write_audio(tmp_path / "t.wav", music_like(2.0, 8000, 1), 8000)
    (want,) = list(Engine(model).analyse([wav]))
    (row,) = infer([model], prepare(Item("t", str(wav)), [model.card], max_windows=0))
    heads = dict(row["outputs"])
    assert list(heads) == ["genre", "valence"]
    np.testing.assert_allclose(heads["genre"], want.models["two-heads"].outputs["genre"], atol=1e-6)
    np.testing.assert_allclose(heads["valence"], want.models["two-heads"].outputs["valence"], atol=1e-6)
    assert row["tags"] == heads["genre"]
