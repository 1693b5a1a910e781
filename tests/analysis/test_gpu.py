"""The CUDA path. The contract tests run everywhere: which provider options a CUDA session gets, the fallback
when the provider does not start, and what "auto" resolves to on a GPU machine. The agreement test runs where
a CUDA device and onnxruntime's CUDA provider really work (``bench/bench_gpu.py`` measures the rest there)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from conftest import TRUMPET

import tagger.analysis.engine as engine_mod
import tagger.models.session as tagger_model
from tagger.analysis.engine import pipeline_settings
from tagger.analysis.windows import iter_windows
from tagger.config import load_config
from tagger.models.session import load_model

CLIP = TRUMPET


def test_cuda_sessions_ask_for_full_float32_and_fall_back_loudly(monkeypatch, caplog):
    """TF32 moved the Jamendo and MTAT models' tags by up to 0.07 on an H100: CUDA sessions must turn it off.
    Here no GPU exists, so the session falls back to the CPU, and says so."""
    asked: list = []
    real = ort.InferenceSession

    def recording(path, opts=None, providers=None, **kw):
        asked.append(providers)
        return real(path, opts, providers=["CPUExecutionProvider"], **kw)

    monkeypatch.setattr(tagger_model, "_cuda_usable", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(tagger_model, "_ANNOUNCED", set())
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", recording)
    model = load_model("musicnn-jamendo", device="auto", precision="auto")
    assert asked and asked[0][0] == ("CUDAExecutionProvider", {"use_tf32": "0"})
    assert asked[0][1] == "CPUExecutionProvider"
    assert model.precision == "float"  # a GPU runs the float model: no int8 variant was opened
    assert model.provider == "CPUExecutionProvider"
    assert any("CUDA provider did not start" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def _fake(provider: str, threads: int = 1) -> SimpleNamespace:
    return SimpleNamespace(provider=provider, threads=threads)


def test_auto_pipeline_settings_follow_the_device(monkeypatch):
    monkeypatch.setattr(engine_mod.os, "cpu_count", lambda: 16)
    gpu = pipeline_settings([_fake("CUDAExecutionProvider"), _fake("CUDAExecutionProvider")])
    assert (gpu.batch, gpu.decode_workers, gpu.decode_processes, gpu.gpu) == (16, 14, True, True)
    cpu = pipeline_settings([_fake("CPUExecutionProvider", threads=2)])
    assert (cpu.batch, cpu.decode_workers, cpu.decode_processes, cpu.gpu) == (4, 2, False, False)
    single = pipeline_settings([_fake("CPUExecutionProvider", threads=1)] * 5)
    assert (single.batch, single.streams) == (1, 5)  # 16 cores: five single-threaded models at once, a window each
    given = pipeline_settings([_fake("CUDAExecutionProvider")], batch=8, decode_workers=3, decode_processes=False)
    assert (given.batch, given.decode_workers, given.decode_processes) == (8, 3, False)
    monkeypatch.setattr(engine_mod.os, "cpu_count", lambda: 2)
    small = pipeline_settings([_fake("CUDAExecutionProvider")])
    assert (small.decode_workers, small.decode_processes) == (2, False)  # no processes for two workers


def test_cpu_cores_are_split_between_models_run_at_once(monkeypatch):
    monkeypatch.setattr(engine_mod.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(tagger_model.os, "cpu_count", lambda: 2)
    assert tagger_model.auto_threads(5, "cpu") == 1 and tagger_model.auto_threads(1, "cpu") == 2
    five = [_fake("CPUExecutionProvider", 1) for _ in range(5)]
    assert pipeline_settings(five).streams == 2
    assert pipeline_settings(five, streams=1).streams == 1
    assert pipeline_settings([_fake("CPUExecutionProvider", 2)] * 5).streams == 1  # threads given: one at a time
    assert pipeline_settings([_fake("CPUExecutionProvider", 2)]).streams == 1
    assert pipeline_settings([_fake("CUDAExecutionProvider", 1)] * 5).streams == 1
    monkeypatch.setattr(engine_mod.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(tagger_model.os, "cpu_count", lambda: 16)
    threads = tagger_model.auto_threads(5, "cpu")
    assert threads == 3 and pipeline_settings([_fake("CPUExecutionProvider", threads)] * 5).streams == 5


def test_config_defaults_leave_the_pipeline_to_auto(tmp_path):
    cfg = load_config(None)
    assert (cfg.batch_size, cfg.decode_workers, cfg.decode_processes) == (0, 0, None)
    f = tmp_path / "c.yaml"
    f.write_text("decode_processes: true\nbatch_size: 8\ndecode_workers: 5\n")
    cfg = load_config(f)
    assert (cfg.batch_size, cfg.decode_workers, cfg.decode_processes) == (8, 5, True)


def _cuda_works() -> bool:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    ok, _ = tagger_model._cuda_usable()
    return ok


@pytest.mark.skipif(not _cuda_works(), reason="needs a CUDA device and onnxruntime's CUDA provider")
@pytest.mark.parametrize("name", ["musicnn-msd", "fcn-jamendo", "musicnn-jamendo", "fcn-mtat"])
def test_gpu_and_cpu_give_the_same_tags(name):
    from tagger.analysis.decode import decode

    cpu = load_model(name, device="cpu", precision="float")
    gpu = load_model(name, device="cuda", precision="float")
    assert gpu.provider == "CUDAExecutionProvider"
    windows = np.stack(list(iter_windows([decode(CLIP, cpu.card.sample_rate).samples], cpu.card)))
    (tc, ec), (tg, eg) = cpu.run(windows), gpu.run(windows)
    assert np.abs(tc - tg).max() < 1e-4
    if ec.shape[1]:
        cos = np.sum(ec * eg, 1) / (np.linalg.norm(ec, axis=1) * np.linalg.norm(eg, axis=1))
        assert cos.min() > 0.9999
