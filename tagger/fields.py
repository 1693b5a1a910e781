"""Tag fields, declared once, as data.

Every field the tool decides and writes is one :class:`Field` here: its name (config keys, decisions, the web
page, ``tagger set``), the tag it is stored under in files, the model label groups that feed it, whether it
holds one value (exclusive: the models' shares compete) or several, whether it is the user's (their values
are kept, corrected, learned from) or the tool's own (always replaced), and where the web page shows it.
Everything else reads this registry: the config validation, the decision, the tag plans and the per-format
storage, ``tagger set``/``eval``/``train``, the web page's facets and corrections.

Adding a field (``style``, say) is one :func:`register` call (or one entry in ``FIELDS``) plus its policy in
``write.fields`` and its values in ``vocabulary`` of the configuration; ``tests/test_fields.py`` shows it read,
decided, written, undone and faceted. The per-field decision settings (:class:`FieldPolicy`) are data of the
configuration file; their defaults live in ``tagger/config/default.yaml``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One tag field the tool decides and writes."""

    name: str  # lower case: config keys, decisions, `tagger set --NAME`, the web page
    tag: str  # the name in files (and in TAGGER_WRITTEN entries)
    groups: tuple[str, ...]  # model-card label groups whose labels can support its values
    exclusive: bool = False  # one value wins (the models' shares compete); else independent labels
    owner: str = "user"  # "user": their values are kept and learned from | "tool": always replaced
    correctable: bool = False  # the user can set and lock it (`tagger set`, the web page)
    trainable: bool = False  # `tagger train` and `tagger eval` learn and measure it
    facet: bool = False  # the web page offers it as a facet of its own
    title: str = ""  # how the web page names it
    # Where it is stored per tag family ("id3", "id3v23", "vorbis", "mp4"); None: the custom homes that
    # every reader keeps (ID3 TXXX:TAG, a Vorbis comment TAG, an iTunes freeform atom).
    storage: Mapping[str, str] | None = None

    @property
    def heading(self) -> str:
        return self.title or self.name.capitalize()


FIELDS: tuple[Field, ...] = (
    Field("genre", "GENRE", ("genre",), exclusive=True, correctable=True, trainable=True, facet=True,
          storage={"id3": "TCON", "id3v23": "TCON", "vorbis": "GENRE", "mp4": "\xa9gen"}),
    Field("mood", "MOOD", ("mood",), correctable=True, trainable=True, facet=True,
          storage={"id3": "TMOO", "id3v23": "TXXX:MOOD", "vorbis": "MOOD", "mp4": "----:com.apple.iTunes:MOOD"}),
    Field("descriptors", "TAGGER_DESCRIPTORS", ("instrument", "vocals", "era"), owner="tool"),
)
# Read, never written: what playlists, album/folder context and the web page show.
INFO_STORAGE: dict[str, dict[str, str]] = {
    "ARTIST": {"id3": "TPE1", "id3v23": "TPE1", "vorbis": "ARTIST", "mp4": "\xa9ART"},
    "ALBUM": {"id3": "TALB", "id3v23": "TALB", "vorbis": "ALBUM", "mp4": "\xa9alb"},
    "TITLE": {"id3": "TIT2", "id3v23": "TIT2", "vorbis": "TITLE", "mp4": "\xa9nam"},
    # the MusicBrainz recording id Picard writes: look-ups by MBID (OpenSubsonic servers, Navidrome)
    "MUSICBRAINZ_TRACKID": {"id3": "UFID:http://musicbrainz.org", "id3v23": "UFID:http://musicbrainz.org",
                            "vorbis": "MUSICBRAINZ_TRACKID", "mp4": "----:com.apple.iTunes:MusicBrainz Track Id"},
}
INFO_FIELDS = tuple(INFO_STORAGE)
# Descriptor groups the web page shows as facets of their own (from the labels behind each value).
GROUP_FACETS = ("instrument", "vocals", "era")

_registry: dict[str, Field] = {f.name: f for f in FIELDS}


def register(field: Field) -> None:
    """Add a field (an extension or a test); its name and tag must be new."""
    if field.name in _registry or any(f.tag == field.tag for f in _registry.values()):
        raise ValueError(f"field {field.name!r} ({field.tag}) is already registered")
    if field.owner not in ("user", "tool"):
        raise ValueError(f"field {field.name!r}: owner must be 'user' or 'tool', got {field.owner!r}")
    _registry[field.name] = field


def unregister(name: str) -> None:
    _registry.pop(name, None)


@contextmanager
def registered(*extra: Field) -> Iterator[None]:
    """The registry with ``extra`` fields for the duration of a block (tests, plug-ins)."""
    for f in extra:
        register(f)
    try:
        yield
    finally:
        for f in extra:
            unregister(f.name)


def all_fields() -> tuple[Field, ...]:
    return tuple(_registry.values())


def field(name: str) -> Field:
    return _registry[name]


def names() -> tuple[str, ...]:
    return tuple(_registry)


def tags() -> dict[str, str]:
    """Field name -> its tag in files."""
    return {f.name: f.tag for f in _registry.values()}


def user_tags() -> tuple[str, ...]:
    return tuple(f.tag for f in _registry.values() if f.owner == "user")


def tool_tags() -> tuple[str, ...]:
    return tuple(f.tag for f in _registry.values() if f.owner == "tool")


def correctable() -> tuple[str, ...]:
    return tuple(f.name for f in _registry.values() if f.correctable)


def trainable() -> tuple[str, ...]:
    return tuple(f.name for f in _registry.values() if f.trainable)


def facets() -> tuple[str, ...]:
    return tuple(f.name for f in _registry.values() if f.facet)


def groups_of(name: str) -> tuple[str, ...]:
    """The label groups feeding field ``name`` (a name not registered: the group of that name)."""
    f = _registry.get(name)
    return f.groups if f is not None else (name,)


def storage() -> dict[str, Mapping[str, str]]:
    """Tag name -> its key per tag family, for every field with declared homes and the read-only fields."""
    return {**{f.tag: f.storage for f in _registry.values() if f.storage}, **INFO_STORAGE}


@dataclass(frozen=True)
class FieldPolicy:
    policy: str  # fill | merge | replace
    max_values: int
    min_score: float
    relative: float
    min_models: int = 1
    rule: str = "mean"  # share (exclusive: genre) | mean (independent labels)
    # A value only one model of the set can name is written on that model alone when its own calibrated
    # probability for the value reaches this (and it is that model's best value); 1.0 never.
    solo_score: float = 0.5
    # A model that cannot name a value still speaks against it when it names another value of the field as
    # its best with at least this calibrated probability (cross-vocabulary counter-evidence); 1.0 never.
    counter_score: float = 0.5
