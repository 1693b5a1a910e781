"""The settings, declared once: type, bounds or choices, help, command-line flag, and what a change needs.

The defaults themselves live in ``tagger/config/default.yaml`` (with the comments a user reads when editing a
copy); a test checks that every scalar key there has a row here and the other way round. From this table:

- :func:`check` validates a setting wherever it comes from (the config file or a flag), with one message
  naming the key or the flag;
- :func:`add_flags` gives every command the same flags (``tagger scan --threads`` takes what the file takes);
- :func:`needs_reload` tells the daemon whether a changed configuration needs the model set loaded again
  (SIGHUP): a changed ``precision``, ``memory`` or ``models_dir`` is not silently ignored.

Settings that are not one value (``library``, ``extensions``, ``write.fields``, ``vocabulary``) are checked in
:mod:`tagger.config` itself.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tagger.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    key: str  # dotted key in the config file
    attr: str  # the Config attribute it becomes
    kind: str  # int | number | bool | auto-bool | choice | text | separator | path | models
    help: str = ""
    lo: float | None = None  # bounds, inclusive (numbers)
    hi: float | None = None
    positive: bool = False  # a number that must be > 0 (beyond lo)
    choices: tuple[Any, ...] = ()
    flag: str | None = None  # the command-line flag every command takes for it
    reload: str = "next"  # "models": a change loads the model set again | "next": used from the next file on


SETTINGS: tuple[Setting, ...] = (
    Setting("models", "models", "models", "model names or .onnx paths of the set", reload="models"),
    Setting("models_dir", "models_dir", "path", "folder searched for models before the bundled ones", reload="models"),
    Setting("database", "database", "path", "database folder", flag="--database"),
    Setting("device", "device", "choice", "where inference runs", choices=("auto", "cpu", "cuda"), flag="--device",
            reload="models"),
    Setting("threads", "threads", "int", "onnxruntime threads per session (0: the machine's choice)", lo=0, hi=1024,
            flag="--threads", reload="models"),
    Setting("batch_size", "batch_size", "int", "3-s windows per inference call (0: auto)", lo=0, hi=4096,
            flag="--batch-size"),
    Setting("decode_workers", "decode_workers", "int", "files decoded in parallel with inference (0: auto)",
            lo=0, hi=64),
    Setting("decode_processes", "decode_processes", "auto-bool", "decode in worker processes (auto: with a GPU)"),
    Setting("streams", "streams", "int", "models run at once, each call on its own session (0: auto: as many as "
            "the sessions' threads leave cores for on the CPU, one on a GPU)", lo=0, hi=64),
    Setting("max_windows", "max_windows", "int", "analyse at most N windows per track and model, spread evenly "
            "(0: all)", lo=0, hi=100_000, flag="--max-windows"),
    Setting("memory", "memory", "choice", "onnxruntime memory arenas", choices=("shared", "lean", "fast"),
            reload="models"),
    Setting("precision", "precision", "choice", "auto: verified int8 variants where the CPU has VNNI/AMX (default) "
            "| float | int8", choices=("auto", "float", "int8"), flag="--model-precision", reload="models"),
    Setting("commit_every", "commit_every", "int", "files per database commit", lo=1),
    Setting("commit_seconds", "commit_seconds", "number", "seconds between database commits", positive=True),
    Setting("watch.settle_seconds", "settle_seconds", "number", "quiet seconds before a file is analysed", lo=0),
    Setting("watch.rescan_hours", "rescan_hours", "number", "hours between reconciliation scans (0: never)", lo=0),
    Setting("watch.polling", "polling", "bool", "poll instead of inotify"),
    Setting("watch.poll_seconds", "poll_seconds", "number", "polling interval", positive=True),
    Setting("write.enabled", "write_enabled", "bool", "false: analyse and store only, never touch audio files"),
    Setting("write.id3_version", "id3_version", "choice", "ID3 version written", choices=(3, 4)),
    Setting("write.id3v23_separator", "id3v23_separator", "separator", "joins values in ID3v2.3 frames"),
    Setting("write.provenance", "provenance", "bool", "TAGGER_MODEL, TAGGER_DATE, TAGGER_WRITTEN with a value"),
    Setting("write.scores", "scores", "bool", "also TAGGER_SCORES"),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
BY_ATTR: dict[str, Setting] = {s.attr: s for s in SETTINGS}
UNSET = object()


def lookup(raw: Mapping[str, Any], key: str) -> Any:
    """The value of a dotted ``key`` in the merged configuration mapping."""
    value: Any = raw
    for part in key.split("."):
        value = value[part]
    return value


def check(setting: Setting, value: Any, where: str | None = None) -> Any:
    """``value`` converted for ``setting``; ConfigError naming ``where`` (the key, or the flag) otherwise."""
    where = where or setting.key

    def need(ok: bool, reason: str) -> None:
        if not ok:
            raise ConfigError(where, reason)

    kind = setting.kind
    if kind in ("int", "number"):
        is_num = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
        need(is_num and not isinstance(value, bool), f"must be {'an integer' if kind == 'int' else 'a number'}"
             + _bounds(setting) + f", got {value!r}")
        need((setting.lo is None or value >= setting.lo) and (setting.hi is None or value <= setting.hi)
             and (not setting.positive or value > 0) and value == value,
             f"must be {'an integer' if kind == 'int' else 'a number'}" + _bounds(setting) + f", got {value!r}")
        return value if kind == "int" else float(value)
    if kind == "bool":
        need(isinstance(value, bool), f"must be true or false, got {value!r}")
        return value
    if kind == "auto-bool":
        need(isinstance(value, bool) or value == "auto", f"must be true, false or auto, got {value!r}")
        return None if value == "auto" else value
    if kind == "choice":
        need(value in setting.choices and not isinstance(value, bool),
             f"must be one of {', '.join(map(str, setting.choices))}, got {value!r}")
        return value
    if kind == "separator":
        need(isinstance(value, str) and value != "", "must be a non-empty string")
        return value
    if kind in ("text", "path"):  # a path is expanded by the config ($XDG_DATA_HOME, ~)
        need(isinstance(value, str) and value.strip() != "", "must be a non-empty string")
        return value
    if kind == "models":
        need(isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, str) and m.strip() for m in value),
             "must be a non-empty list of model names or .onnx paths")
        need(len(set(value)) == len(value), "lists a model twice")
        return tuple(value)
    raise AssertionError(f"unknown setting kind {kind!r}")


def _bounds(s: Setting) -> str:
    parts = []
    if s.positive:
        parts.append("> 0")
    elif s.lo is not None:
        parts.append(f">= {s.lo}")
    if s.hi is not None:
        parts.append(f"<= {s.hi}")
    return (" " + " and ".join(parts)) if parts else ""


def check_all(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every scalar setting of the merged configuration, checked: Config attribute -> value."""
    return {s.attr: check(s, lookup(raw, s.key)) for s in SETTINGS}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every setting that has one; their values are checked by :func:`from_flags`."""
    for s in SETTINGS:
        if s.flag is None:
            continue
        kw: dict[str, Any] = {"dest": _dest(s), "help": s.help or None}
        if s.kind != "choice":
            kw["metavar"] = s.flag.lstrip("-").upper().replace("-", "_")
        if s.kind == "choice":
            kw["choices"] = [str(c) for c in s.choices]
        elif s.kind == "int":
            kw["type"] = int
        elif s.kind == "number":
            kw["type"] = float
        parser.add_argument(s.flag, **kw)


def _dest(s: Setting) -> str:
    """Where argparse keeps a setting's flag: a name of its own, so a command's own options (``eval
    --precision``, a calibration target) never collide with a setting's attribute (``precision``)."""
    return "setting_" + s.attr


def from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Config attribute -> value for every flag given, checked with the setting's own rule."""
    out = {}
    for s in SETTINGS:
        value = getattr(args, _dest(s), None) if s.flag else None
        if value is not None:
            out[s.attr] = check(s, value, s.flag)
    return out


def needs_reload(old: Any, new: Any, settings: Iterable[Setting] = SETTINGS) -> list[str]:
    """The keys whose change needs the model set loaded again (empty: the running models stay)."""
    return [s.key for s in settings if s.reload == "models" and getattr(old, s.attr) != getattr(new, s.attr)]
