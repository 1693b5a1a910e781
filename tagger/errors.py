"""One small error hierarchy. Library code raises these with the path or key; only the CLI turns them into exit codes."""
from __future__ import annotations

from pathlib import Path


class TaggerError(Exception):
    """Base class: every expected failure the user can act on."""

    exit_code = 1

    def __init__(self, subject: str | Path, reason: str) -> None:
        self.subject = str(subject)
        self.reason = reason
        super().__init__(f"{self.subject}: {reason}")


class ConfigError(TaggerError):
    exit_code = 2


class ModelError(TaggerError):
    exit_code = 3


class DecodeError(TaggerError):
    pass


class StoreError(TaggerError):
    exit_code = 4


class StoreLockedError(StoreError):
    exit_code = 5


class TagWriteError(TaggerError):
    """A tag write refused or failed; ``file_changed`` when the reason is that the audio file changed under us
    (then the analysis in hand is stale too)."""

    def __init__(self, subject: str | Path, reason: str, *, file_changed: bool = False) -> None:
        super().__init__(subject, reason)
        self.file_changed = file_changed
