"""Configuration: documented defaults (config.yaml) overlaid with the user's file, validated up front.

Every key is checked against the defaults' shape, so a typo or a bad value stops the program at start
with a message naming the key, instead of surfacing as odd behaviour in the middle of a scan.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tagger import fields as field_registry
from tagger.config import schema
from tagger.errors import ConfigError
from tagger.fields import FieldPolicy

DEFAULTS_FILE = Path(__file__).parent / "default.yaml"
POLICIES = ("fill", "merge", "replace")


def xdg(kind: str) -> Path:
    env, fallback = {"config": ("XDG_CONFIG_HOME", ".config"), "data": ("XDG_DATA_HOME", ".local/share"),
                     "cache": ("XDG_CACHE_HOME", ".cache"), "state": ("XDG_STATE_HOME", ".local/state")}[kind]
    return Path(os.environ.get(env) or Path.home() / fallback)


def default_config_path() -> Path:
    return xdg("config") / "tagger" / "config.yaml"


def expand_path(value: str) -> Path:
    """~ and $VARS, with the XDG variables defaulting to their standard locations when unset."""
    env = dict(os.environ)
    for kind in ("config", "data", "cache", "state"):
        env.setdefault(f"XDG_{kind.upper()}_HOME", str(xdg(kind)))
    out = value
    for key in sorted(env, key=len, reverse=True):
        out = out.replace("${" + key + "}", env[key]).replace("$" + key, env[key])
    return Path(out).expanduser()


FieldRule = FieldPolicy  # one field's decision and write policy (tagger/decision/decide.py)


@dataclass(frozen=True)
class Config:
    library: tuple[Path, ...]
    models: tuple[str, ...]
    models_dir: Path
    database: Path
    device: str
    threads: int
    batch_size: int
    decode_workers: int
    decode_processes: bool | None  # worker processes instead of threads; None: auto (processes with a GPU)
    streams: int  # inference calls in flight at once, each a different model; 0: auto
    extensions: frozenset[str]
    commit_every: int
    commit_seconds: float
    write_enabled: bool
    id3_version: int
    id3v23_separator: str
    provenance: bool
    scores: bool  # also write TAGGER_SCORES (the ten strongest fused values) with the provenance
    fields: dict[str, FieldRule]
    vocabulary: dict[str, dict[str, tuple[str, ...]]]
    source: str
    max_windows: int  # > 0: analyse at most this many windows per track and model, spread evenly; 0: all
    memory: str  # shared: one onnxruntime arena for all models | lean: no arenas | fast: one arena per model
    precision: str = "auto"  # auto: a model's verified int8 variant where the CPU has VNNI/AMX | float | int8
    settle_seconds: float = 3.0
    rescan_hours: float = 6.0
    polling: bool = False
    poll_seconds: float = 30.0


def _merge(defaults: Any, user: Any, where: str) -> Any:
    if isinstance(defaults, dict) and where != "vocabulary" and not where.startswith("vocabulary."):
        if not isinstance(user, dict):
            raise ConfigError(where or "config", f"must be a mapping, got {type(user).__name__}")
        out = dict(defaults)
        for key, value in user.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in defaults:
                if where == "write.fields" and key in field_registry.names():  # a field registered by an extension
                    out[key] = value
                    continue
                known = {*map(str, defaults), *(field_registry.names() if where == "write.fields" else ())}
                raise ConfigError(path, f"unknown key (known: {', '.join(sorted(known))})")
            out[key] = _merge(defaults[key], value, path)
        return out
    return user


def _need(cond: bool, key: str, reason: str) -> None:
    if not cond:
        raise ConfigError(key, reason)


def _int(raw: dict, key: str, lo: int, hi: int | None = None) -> int:
    v = raw[key]
    _need(isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi), key,
          f"must be an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "") + f", got {v!r}")
    return v


def _score(v: Any, key: str) -> float:
    _need(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1, key, f"must be a number in [0, 1], got {v!r}")
    return float(v)


def _value_ok(value: str) -> bool:
    """Players split on ; / , and read bare small numbers as ID3v1 genre codes."""
    return bool(value.strip()) and not any(c in value for c in ";/,") and not value.strip().isdigit()


def _vocabulary(raw: Any) -> dict[str, dict[str, tuple[str, ...]]]:
    _need(isinstance(raw, dict), "vocabulary", "must map fields to {value: [labels]}")
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for field, table in raw.items():
        key = f"vocabulary.{field}"
        _need(field in field_registry.names(), key, f"unknown field (known: {', '.join(field_registry.names())})")
        _need(isinstance(table, dict), key, "must map written values to lists of model labels")
        values: dict[str, tuple[str, ...]] = {}
        for value, labels in table.items():
            vkey = f"{key}.{value}"
            value = str(value)
            _need(_value_ok(value), vkey, f"value {value!r} must not contain ; / , or be a bare number")
            if isinstance(labels, str):
                labels = [labels]
            _need(isinstance(labels, list) and all(isinstance(x, (str, int)) and str(x).strip() for x in labels),
                  vkey, "must be a list of model labels")
            values[value] = tuple(str(x) for x in labels)
        out[str(field)] = values
    return out


def load_config(path: Path | None = None, *, required: bool = False) -> Config:
    """Defaults, overlaid with ``path`` (or the XDG config file when it exists)."""
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    source = "defaults"
    user: dict = {}
    candidate = path or default_config_path()
    if path is not None and not path.is_file():
        raise ConfigError(path, "config file not found")
    if candidate.is_file():
        try:
            user = yaml.safe_load(candidate.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(candidate, f"not valid YAML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(candidate, f"not a text file (invalid UTF-8 at byte {exc.start})") from exc
        except RecursionError as exc:
            raise ConfigError(candidate, "nested too deeply to be a configuration") from exc
        except OSError as exc:
            raise ConfigError(candidate, f"cannot read: {exc.strerror}") from exc
        source = str(candidate)
        if not isinstance(user, dict):
            raise ConfigError(candidate, "top level must be a mapping of keys")
    if "model" in user and "models" not in user:  # a single `model:` from an older config is a set of one
        user["models"] = [user.pop("model")]
    if "labels" in user:
        raise ConfigError(f"{source}: labels", "per-model label tables were replaced by `vocabulary` (field -> "
                                               "value -> labels of any model); see the default config")
    # A vocabulary field given by the user replaces that field's default table as a whole.
    user_vocab = user.pop("vocabulary", None)
    try:
        raw = _merge(defaults, user, "")
        if user_vocab is not None:
            if not isinstance(user_vocab, dict):
                raise ConfigError("vocabulary", "must map fields to {value: [labels]}")
            raw["vocabulary"] = {**defaults["vocabulary"], **user_vocab}
        return _build(raw, source)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.subject}", exc.reason) from exc


def _build(raw: dict, source: str) -> Config:
    values = schema.check_all(raw)  # every scalar setting, by the one table
    for s in schema.SETTINGS:
        if s.kind == "path":
            values[s.attr] = expand_path(values[s.attr])
    lib = raw["library"]
    _need(isinstance(lib, list) and all(isinstance(x, str) for x in lib), "library", "must be a list of folders")
    exts = raw["extensions"]
    _need(isinstance(exts, list) and all(isinstance(e, str) and e.startswith(".") for e in exts), "extensions",
          "must be a list like [.mp3, .flac]")
    w = raw["write"]
    fields = {}
    for name in field_registry.names():
        key = f"write.fields.{name}"
        _need(name in w["fields"], key, "missing: every field needs its policy, max_values, min_score and relative")
        f = w["fields"][name]
        required = {"policy", "max_values", "min_score", "relative"}
        optional = {"min_models", "rule", "solo_score", "counter_score"}
        _need(isinstance(f, dict) and required <= set(f) <= required | optional, key,
              f"needs policy, max_values, min_score, relative (and optionally {', '.join(sorted(optional))})")
        _need(f["policy"] in POLICIES, f"{key}.policy", f"must be one of {', '.join(POLICIES)}, got {f['policy']!r}")
        rule = f.get("rule", "share" if field_registry.field(name).exclusive else "mean")
        _need(rule in ("share", "mean"), f"{key}.rule", f"must be share or mean, got {rule!r}")
        fields[name] = FieldRule(f["policy"], _int(f, "max_values", 0), _score(f["min_score"], f"{key}.min_score"),
                                 _score(f["relative"], f"{key}.relative"),
                                 _int(f, "min_models", 1) if "min_models" in f else 1, rule,
                                 **{k: _score(f[k], f"{key}.{k}") for k in ("solo_score", "counter_score") if k in f})
    return Config(library=tuple(expand_path(x) for x in lib), extensions=frozenset(e.lower() for e in exts),
                  fields=fields, vocabulary=_vocabulary(raw["vocabulary"]), source=source, **values)
