"""The model card: one schema, written by the exporter into the ONNX metadata and read by the runtime.

A card says everything needed to run a model and to interpret its outputs without knowing it by name:
the input contract (sample rate, window, hop, padding, the resampler the front-end expects) and any
number of named outputs, each with a kind (independent ``sigmoid`` tags, ``softmax`` classes, or an
``embedding``), its labels, each label's group (genre, mood, instrument, vocals, era, ...), how windows
are aggregated into a song, and optional per-label calibration. Schema 1 files (one ``tags`` and one
``embedding`` output, no groups) are read as the equivalent schema 2 card.

Pure data and validation; no onnxruntime and no torch, so both sides can import it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

METADATA_KEY = "tagger.model"
SCHEMA = 2
OUTPUT_KINDS = ("sigmoid", "softmax", "embedding")
AGGREGATES = ("mean", "max")
SHORT_INPUT = ("repeat", "zeros")
PARTIAL_TAIL = ("drop", "pad", "end")
RESAMPLERS = ("soxr-hq",)


PARTS = ("tags", "embedding")


class CardError(ValueError):
    """The card is missing a field or has a malformed one; the message names the field."""


@dataclass(frozen=True)
class Output:
    name: str
    kind: str
    labels: tuple[str, ...] = ()
    groups: dict[str, str] = field(default_factory=dict)  # label -> group; labels not listed have none
    dim: int = 0  # embedding width (for label outputs: len(labels))
    aggregate: str = "mean"
    # label -> (a, b): calibrated = sigmoid(a * logit(p) + b). Empty: raw scores are used as they are.
    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)
    meaning: str = ""
    # label -> the score at or above which the label may be written (a trained head's precision target);
    # a label without one is never written by the head.
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.dim if self.kind == "embedding" else len(self.labels)

    def group_of(self, label: str) -> str:
        return self.groups.get(label, "")


@dataclass(frozen=True)
class Source:
    """One block of a head's input: the stored song-level ``part`` (tags or embedding) of a model version."""

    model: str
    version: str
    part: str
    dim: int

    @property
    def analyser(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass(frozen=True)
class Card:
    id: str
    version: str
    sample_rate: int
    window: int
    hop: int
    outputs: tuple[Output, ...]
    pad_start: int = 0
    pad_end: int = 0
    short_input: str = "repeat"  # a track shorter than one window: tile it ("repeat") or pad with "zeros"
    partial_tail: str = "drop"  # audio after the last full window: "drop", zero-"pad" it, or a window aligned to the "end"
    resampler: str = "soxr-hq"  # the resampler the front-end was made to expect
    description: str = ""
    licence: str = ""
    licence_text: str = ""
    source: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    input_name: str = "waveform"
    # A head reads stored vectors instead of audio: the blocks of its input, in order, and the field it decides.
    reads: tuple[Source, ...] = ()
    decides: str = ""
    # Scopes ("album", "folder") whose tagged mates may decide the field when they agree: enabled by
    # `tagger train` only where it measured the vote's precision on the library (see tagger/decision/context.py).
    context: tuple[str, ...] = ()
    # A head below its threshold may still write its top label when the model set's own decision for the field
    # is that same value (two independent voices agree): enabled by `tagger train` only where it measured that
    # agreement's precision on the library's tagged tracks (see tagger/decision/track.py, with_set).
    agree_with_set: bool = False
    # When the runtime bounds the windows per track (`max_windows`), at most this many for this model (0: no
    # cap of its own): a model with long windows hears as much of a track in fewer of them (8 x 10 s against
    # 32 x 3 s), and its front end costs per window; a 3-s model may need fewer to summarise a track (musicnn: 16).
    max_windows: int = 0

    @property
    def is_head(self) -> bool:
        return bool(self.reads)

    @property
    def windowing(self) -> tuple:
        """Everything that decides which windows a model is given: two cards with equal ``windowing`` are fed
        identical windows of every track."""
        return (self.sample_rate, self.window, self.hop, self.pad_start, self.pad_end, self.partial_tail,
                self.short_input)

    @property
    def input_width(self) -> int:
        """Samples per window for an audio model; features per track for a head."""
        return sum(s.dim for s in self.reads) if self.reads else self.window

    @property
    def analyser(self) -> str:
        """What a stored result depends on: a new model version means stale results."""
        return f"{self.id}@{self.version}"

    def output(self, kind: str) -> Output | None:
        """The first output of a kind ('embedding', or 'tags' for the first label output)."""
        for out in self.outputs:
            if out.kind == kind or (kind == "tags" and out.kind != "embedding"):
                return out
        return None

    @property
    def tags(self) -> Output:
        out = self.output("tags")
        assert out is not None  # validate() guarantees one
        return out

    @property
    def embedding(self) -> Output | None:
        return self.output("embedding")

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels of the main label output (the first sigmoid or softmax output)."""
        return self.tags.labels

    @property
    def groups(self) -> dict[str, str]:
        return self.tags.groups

    @property
    def embedding_dim(self) -> int:
        emb = self.embedding
        return emb.dim if emb is not None else 0

    def validate(self) -> "Card":
        where = f"model {self.id!r}"
        if not self.id or not self.version:
            raise CardError(f"{where}: id and version are required")
        for src in self.reads:
            if src.part not in PARTS or src.dim <= 0 or not src.model or not src.version:
                raise CardError(f"{where}: input block {src} needs a model, a version, a part in {PARTS} and dim > 0")
        if self.reads and not self.decides:
            raise CardError(f"{where}: a head must say which field it decides")
        if set(self.context) - {"album", "folder"} or (self.context and not self.reads):
            raise CardError(f"{where}: context must name album and/or folder, and only a head has one")
        if not isinstance(self.agree_with_set, bool):
            raise CardError(f"{where}: agree_with_set must be true or false, got {self.agree_with_set!r}")
        if self.agree_with_set and not self.reads:
            raise CardError(f"{where}: only a head can agree with the model set")
        for name in ("sample_rate", "window", "hop"):
            if not self.reads and int(getattr(self, name)) <= 0:
                raise CardError(f"{where}: {name} must be positive")
        if self.pad_start < 0 or self.pad_end < 0:
            raise CardError(f"{where}: padding must not be negative")
        if self.short_input not in SHORT_INPUT:
            raise CardError(f"{where}: short_input must be one of {SHORT_INPUT}, got {self.short_input!r}")
        if self.max_windows < 0:
            raise CardError(f"{where}: max_windows must be 0 (no cap) or positive, got {self.max_windows}")
        if self.partial_tail not in PARTIAL_TAIL:
            raise CardError(f"{where}: partial_tail must be one of {PARTIAL_TAIL}, got {self.partial_tail!r}")
        if self.resampler not in RESAMPLERS:
            raise CardError(f"{where}: resampler {self.resampler!r} is not available (have {RESAMPLERS})")
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise CardError(f"{where}: output names must be unique, got {names}")
        if not any(o.kind != "embedding" for o in self.outputs):
            raise CardError(f"{where}: needs at least one label output (sigmoid or softmax)")
        for o in self.outputs:
            ow = f"{where}, output {o.name!r}"
            if o.kind not in OUTPUT_KINDS:
                raise CardError(f"{ow}: kind must be one of {OUTPUT_KINDS}, got {o.kind!r}")
            if o.aggregate not in AGGREGATES:
                raise CardError(f"{ow}: aggregate must be one of {AGGREGATES}, got {o.aggregate!r}")
            if o.kind == "embedding":
                if o.dim <= 0:
                    raise CardError(f"{ow}: an embedding needs dim > 0")
                continue
            if not o.labels or len(set(o.labels)) != len(o.labels):
                raise CardError(f"{ow}: labels must be non-empty and unique")
            stray = set(o.groups) - set(o.labels)
            if stray:
                raise CardError(f"{ow}: groups name unknown labels {sorted(stray)[:5]}")
            stray = (set(o.calibration) | set(o.thresholds)) - set(o.labels)
            if stray:
                raise CardError(f"{ow}: calibration or thresholds name unknown labels {sorted(stray)[:5]}")
        return self

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = SCHEMA
        if not self.reads:
            del data["reads"], data["decides"], data["context"], data["agree_with_set"]
        if not self.max_windows:
            del data["max_windows"]
        for o in data["outputs"]:
            if not o["thresholds"]:
                del o["thresholds"]
            o["labels"] = list(o["labels"])
            o["calibration"] = {k: list(v) for k, v in o["calibration"].items()}
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Card":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardError(f"metadata {METADATA_KEY!r} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise CardError(f"metadata {METADATA_KEY!r} must be a JSON object")
        schema = raw.get("schema")
        try:
            if schema == 1:
                return _from_v1(raw).validate()
            if schema == SCHEMA:
                return _from_v2(raw).validate()
        except KeyError as exc:
            raise CardError(f"metadata lacks required field {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, CardError):
                raise
            raise CardError(f"metadata has a malformed field: {exc}") from exc
        raise CardError(f"metadata schema {schema!r} is not supported (expected 1 or {SCHEMA})")


def _common(raw: dict) -> dict:
    return dict(id=str(raw["id"]), version=str(raw["version"]), sample_rate=int(raw["sample_rate"]),
                window=int(raw["window"]), hop=int(raw["hop"]), pad_start=int(raw.get("pad_start", 0)),
                pad_end=int(raw.get("pad_end", 0)), short_input=str(raw.get("short_input", "repeat")),
                partial_tail=str(raw.get("partial_tail", "drop")), description=str(raw.get("description", "")),
                licence=str(raw.get("licence", "")), licence_text=str(raw.get("licence_text", "")),
                source={str(k): str(v) for k, v in dict(raw.get("source", {})).items()},
                metrics=dict(raw.get("metrics", {})), max_windows=int(raw.get("max_windows", 0)))


def _from_v1(raw: dict) -> Card:
    outputs = (Output("tags", "sigmoid", tuple(map(str, raw["labels"])), aggregate=str(raw.get("aggregate", "mean")),
                      meaning=str(raw.get("tags_output", ""))),
               Output("embedding", "embedding", dim=int(raw["embedding_dim"]), aggregate=str(raw.get("aggregate", "mean")),
                      meaning=str(raw.get("embedding_output", ""))))
    return Card(outputs=outputs, **_common(raw))


def _from_v2(raw: dict) -> Card:
    outputs = []
    for o in raw["outputs"]:
        labels = tuple(map(str, o.get("labels", ())))
        calibration = {str(k): (float(v[0]), float(v[1])) for k, v in dict(o.get("calibration", {})).items()}
        thresholds = {str(k): float(v) for k, v in dict(o.get("thresholds", {})).items()}
        outputs.append(Output(name=str(o["name"]), kind=str(o["kind"]), labels=labels,
                              groups={str(k): str(v) for k, v in dict(o.get("groups", {})).items()},
                              dim=int(o.get("dim", 0)) or len(labels), aggregate=str(o.get("aggregate", "mean")),
                              calibration=calibration, meaning=str(o.get("meaning", "")), thresholds=thresholds))
    reads = tuple(Source(str(r["model"]), str(r["version"]), str(r["part"]), int(r["dim"]))
                  for r in raw.get("reads", ()))
    return Card(outputs=tuple(outputs), resampler=str(raw.get("resampler", "soxr-hq")),
                input_name=str(raw.get("input_name", "waveform")), reads=reads, decides=str(raw.get("decides", "")),
                context=tuple(map(str, raw.get("context", ()))), agree_with_set=raw.get("agree_with_set", False),
                **_common(raw))
