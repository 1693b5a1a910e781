"""The AudioSet tagger (EfficientAT mn04_as): our port against the original implementation's outputs."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED

torch = pytest.importorskip("torch")

REF = SHARED / "reference_audioset"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"AudioSet reference outputs not found at {REF}")
# The acceptance bounds of the port notes, for a port fed the stored 32-kHz input (max abs; embedding relative
# to its largest value). An exact float32 port lands far below them (measured: probabilities 2.6e-6).
LOGMEL_TOL, PROB_TOL, EMB_TOL = 1e-3, 1e-4, 1e-4


@pytest.fixture(scope="module")
def port():
    from exporter.audioset_zoo import build_audioset

    module, card = build_audioset()
    return module, card


def _references():
    return sorted(REF.glob("*.npz")) if REF.is_dir() else []


@needs_ref
@pytest.mark.parametrize("ref_path", _references(), ids=lambda p: p.stem[:30])
def test_port_matches_the_original_on_every_window(port, ref_path):
    module, _ = port
    ref = np.load(ref_path)
    wav = ref["waveform_32k"]
    for i, (start, length) in enumerate(zip(ref["window_starts"], ref["window_lengths"])):
        x = torch.from_numpy(wav[start:start + length][None].astype(np.float32))
        with torch.no_grad():
            logmel = module.front(x)
            logits, emb = module.forward_logmel(logmel)
        if i == 0:
            assert np.abs(logmel[0, 0].numpy() - ref["logmel_first_window"]).max() <= LOGMEL_TOL
        assert np.abs(torch.sigmoid(logits)[0].numpy() - ref["probs"][i]).max() <= PROB_TOL
        scale = np.abs(ref["embedding"][i]).max()
        assert np.abs(emb[0].numpy() - ref["embedding"][i]).max() / scale <= EMB_TOL


@needs_ref
def test_bundled_model_matches_the_original_through_onnxruntime():
    """Full 10-s windows through the shipped ONNX file (the front end inside): the runtime's path."""
    from tagger.models.session import load_model

    model = load_model("mn04-audioset", device="cpu", threads=2, memory="lean")
    assert model.card.sample_rate == 32000 and model.card.window == 320_000 and model.card.embedding_dim == 384
    checked = 0
    for ref_path in _references():
        ref = np.load(ref_path)
        full = [i for i, n in enumerate(ref["window_lengths"]) if n == 320_000]
        if not full:
            continue  # the 5.3-s clip was fed whole: covered by the port test above
        x = np.stack([ref["waveform_32k"][s:s + 320_000] for s in ref["window_starts"][full]]).astype(np.float32)
        probs, emb = model.run(x)
        assert np.abs(probs - ref["probs"][full]).max() <= PROB_TOL
        assert (np.abs(emb - ref["embedding"][full]).max() / np.abs(ref["embedding"][full]).max()) <= EMB_TOL
        checked += len(full)
    assert checked == 40


def test_the_checkpoint_loads_exactly_and_a_wrong_one_is_refused(tmp_path):
    from exporter.audioset import MobileNetAudioSet, load_state
    from exporter.audioset_zoo import WEIGHTS, build_audioset

    state = load_state(WEIGHTS)
    module = MobileNetAudioSet()
    assert len(state) == 312 and sum(v.numel() for k, v in state.items() if "running" not in k
                                     and "num_batches" not in k) == 983_599
    module.load_checkpoint(state)
    state.pop("features.5.block.2.conc_se_layers.0.fc1.bias")
    with pytest.raises(ValueError, match="missing"):
        MobileNetAudioSet().load_checkpoint(state)
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not the published"):
        build_audioset(bad)


def test_the_card_groups_what_the_decision_reads(port):
    _, card = port
    groups = card.groups
    for label, group in (("Blues", "genre"), ("Country", "genre"), ("Disco", "genre"), ("Reggae", "genre"),
                         ("Hip hop music", "genre"), ("Heavy metal", "genre"), ("Happy music", "mood"),
                         ("Piano", "instrument"), ("Female singing", "vocals"), ("Speech", "speech")):
        assert groups[label] == group, label
    assert "Music" not in {k for k, v in groups.items() if v == "genre"}
    assert "CC BY-SA 4.0" in card.licence_text and "Florian Schmid" in card.licence_text


def test_bundled_model_is_what_the_exporter_makes(tmp_path):
    from conftest import assert_same_onnx

    from exporter.__main__ import main
    from tagger.models.session import BUNDLED_DIR

    out = tmp_path / "mn04-audioset.onnx"
    assert main(["audioset", "--output", str(out)]) == 0
    assert_same_onnx(out, BUNDLED_DIR / "mn04-audioset.onnx")


def test_the_convolution_front_end_is_the_stft_one(port):
    """The exported front end computes the STFT as a strided convolution over the bins the mel bands use;
    ``torch.stft`` over all 513 bins must give the same log-mel."""
    module, card = port
    rng = np.random.default_rng(1)
    for n in (320_000, 320_001, 12_345, 514):
        x = torch.from_numpy((rng.standard_normal((2, n)) * 0.1).astype(np.float32))
        with torch.no_grad():
            conv, ref = module.front(x), module.front.stft_reference(x)
        assert conv.shape == ref.shape == (2, 1, 128, 1 + (n - 1) // 320)
        assert float((conv - ref).abs().max()) <= 1e-4
    assert card.max_windows == 8
