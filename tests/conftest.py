"""Shared fixtures. Reference material lives in ../shared beside the checkout; tests that need it skip
cleanly when it is absent (a fresh clone), everything else uses files generated here or committed."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
def _find_shared() -> Path:
    """$TAGGER_SHARED, else a `shared` folder beside the checkout or one level further up."""
    if os.environ.get("TAGGER_SHARED"):
        return Path(os.environ["TAGGER_SHARED"])
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "audio").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


SHARED = _find_shared()
AUDIO = SHARED / "audio"
REFERENCE = SHARED / "reference"
EXPORTER_DATA = ROOT / "exporter" / "data"
TRUMPET = EXPORTER_DATA / "sorohanro_-_solo-trumpet-06.ogg"

def pytest_report_header(config):
    return f"shared reference material: {SHARED if SHARED.is_dir() else 'absent (tests that need it skip)'}"


def pytest_configure(config):
    """Never read or write the developer's real configuration or database: point XDG config, data and
    state at a fresh folder for the whole run (the weights cache stays shared on purpose)."""
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="tagger-tests-"))
    for kind in ("CONFIG", "DATA", "STATE"):
        os.environ[f"XDG_{kind}_HOME"] = str(home / kind.lower())
    import tagger.models.shared_front  # the shared front-end splits are cached apart from the developer's own, too

    tagger.models.shared_front.CACHE_ROOT = home / "fronts"


needs_shared = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference material not found at {SHARED}")


# Re-exported float weights may differ in the last bits between CPUs (folded batch norms, fbank products:
# 137 of 576 values of one FCN convolution differ by 9.5e-7 between an AMD Zen 5 and an Intel Xeon). Every
# float tensor is held to this bound relative to its largest magnitude, ten times above that measured
# difference and far below what any real change to a layer makes; integer tensors stay exact.
REEXPORT_RTOL = 1e-5


def assert_same_onnx(fresh_path, bundled_path, close: dict | None = None) -> None:
    """Two exported files carry the same metadata, the same graph and the same initializers within bounds.

    Float initializers are compared with ``REEXPORT_RTOL`` relative to the tensor's largest magnitude (never bit
    for bit: the bundled files were made on another CPU). ``close`` maps a tensor shape to assert_allclose
    tolerances, for tensors measured at export time (wider than the bound above)."""
    import json

    import onnx
    from onnx import numpy_helper

    fresh, bundled = onnx.load(str(fresh_path)), onnx.load(str(bundled_path))
    assert {p.key: json.loads(p.value) for p in fresh.metadata_props} == \
           {p.key: json.loads(p.value) for p in bundled.metadata_props}
    fw = {i.name: numpy_helper.to_array(i) for i in fresh.graph.initializer}
    bw = {i.name: numpy_helper.to_array(i) for i in bundled.graph.initializer}
    assert fw.keys() == bw.keys()
    for name in fw:
        a, b = fw[name], bw[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        tol = (close or {}).get(a.shape)
        if tol:
            np.testing.assert_allclose(a, b, err_msg=name, **tol)
        elif np.issubdtype(a.dtype, np.floating):
            scale = float(np.max(np.abs(b.astype(np.float64)))) if b.size else 0.0
            np.testing.assert_allclose(a, b, rtol=0, atol=REEXPORT_RTOL * max(scale, 1e-30), err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert [n.op_type for n in fresh.graph.node] == [n.op_type for n in bundled.graph.node]


def reference_clips() -> list[Path]:
    return sorted(p for p in AUDIO.glob("*.ogg") if not p.name.endswith(".hq.ogg")) if AUDIO.is_dir() else []


@pytest.fixture(scope="module")  # its decoded checkpoints are large: released with each file
def weights_archive():
    """The musicnn 0.1.0 wheel (downloaded into the cache once; .ci/run fetches it up front)."""
    pytest.importorskip("torch")
    from exporter.weights import WeightsUnavailable, open_weights

    try:
        return open_weights()
    except WeightsUnavailable as exc:
        pytest.skip(f"musicnn weights unavailable: {exc}")


@pytest.fixture(scope="session")
def msd_model():
    from tagger.models.session import load_model

    # No arena: a session-long model would keep the largest batch any test ran (470 MB after the format test).
    return load_model("musicnn-msd", device="cpu", threads=2, memory="lean")


@pytest.fixture(autouse=True)
def give_memory_back():
    """After each test, hand freed heap back to the system: onnxruntime arenas, torch and numpy leave large
    freed blocks in glibc's heap that would otherwise add up across tests (``make test`` stays under 2 GB)."""
    yield
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


# Threads that libraries start once per process and keep on purpose (not a test's leak): Ray's workers and
# log monitors, the multiprocessing resource tracker's feeder, Playwright's event loop.
LIBRARY_THREADS = ("ray_", "Thread-", "asyncio_", "QueueFeederThread", "ThreadPoolExecutor-")


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail any test that leaves a thread of its own or a child process running: stoppable threads must be
    stopped, decoder processes joined. Threads a library keeps for the process are named above."""
    import multiprocessing

    before = set(threading.enumerate())
    children = set(multiprocessing.active_children())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leaked:
        t.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive() and (t.name.startswith("tagger") or not t.daemon)
             and not t.name.startswith(LIBRARY_THREADS)]
    assert not still, f"threads leaked by the test: {still}"
    orphans = [c for c in multiprocessing.active_children() if c not in children]
    for c in orphans:
        c.join(timeout=5)
    alive = [f"{c.name} (pid {c.pid})" for c in orphans if c.is_alive()]
    assert not alive, f"child processes leaked by the test: {alive}"


# What makes a test slow: it runs a real model. A fixture that loads one (directly or through another fixture)
# or a test body that does, marks the test `slow` (`pytest -m "not slow"` runs the rest in seconds).
_LOADS_MODELS = ("load_model(", "load_models(", "Model(", "msd_model", "scan(", "Engine(", "Daemon(", 'main(["scan"',
                 'main(["analyze"', 'main(["analyse"', 'main(["watch"', 'main(["train"', 'main(["eval"', "run_batch(")


def _loads_models(func, seen: dict) -> bool:
    import inspect

    key = id(func)
    if key not in seen:
        try:
            src = inspect.getsource(func)
        except (OSError, TypeError):
            src = ""
        seen[key] = any(m in src for m in _LOADS_MODELS)
    return seen[key]


def pytest_collection_modifyitems(config, items):
    seen: dict = {}
    for item in items:
        fixturedefs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        funcs = [getattr(item, "function", None)] + [d.func for defs in fixturedefs.values() for d in defs]
        if any(f is not None and _loads_models(f, seen) for f in funcs):
            item.add_marker(pytest.mark.slow)


def serving(srv, name: str = "tagger-test-serve"):
    """Run an HTTP server made by ``make_server`` in a thread for a test; stop and join it afterwards."""
    import contextlib

    @contextlib.contextmanager
    def running():
        thread = threading.Thread(target=srv.serve_forever, name=name)
        thread.start()
        try:
            yield srv
        finally:
            srv.shutdown()
            srv.server_close()
            thread.join()

    return running()


def sine(seconds: float, rate: int = 44100, channels: int = 2, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A (channels, n) test signal: a tone plus a little noise, so codecs have something to encode."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)]).astype(np.float32)


def running_mpd(music: Path, tmp: Path):
    """A real MPD over a Unix socket with a null output, serving ``music``, its database updated; yields the
    socket path and stops MPD afterwards."""
    import contextlib
    import shutil
    import subprocess
    import time

    from tagger.integrations.mpd import MpdClient

    @contextlib.contextmanager
    def running():
        sock = tmp / "mpd.sock"
        conf = tmp / "mpd.conf"
        conf.write_text(f'music_directory "{music}"\ndb_file "{tmp}/mpd.db"\nlog_file "{tmp}/mpd.log"\n'
                        f'state_file "{tmp}/state"\nbind_to_address "{sock}"\n'
                        'audio_output {\n type "null"\n name "null"\n}\n')
        proc = subprocess.Popen([shutil.which("mpd") or "mpd", "--no-daemon", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not sock.exists():
                assert proc.poll() is None and time.monotonic() < deadline, (tmp / "mpd.log").read_text()
                time.sleep(0.05)
            with MpdClient(str(sock)) as mpd:
                mpd.command("update")
                while any(k == "updating_db" for k, _ in mpd.command("status")):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            yield sock
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    return running()
