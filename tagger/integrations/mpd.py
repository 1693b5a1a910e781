"""`tagger mpd`: keep MPD's queue going with tracks that sound like the one playing.

A small client of MPD's text protocol (https://mpd.readthedocs.io/en/latest/protocol.html) over its Unix socket
or TCP: after the current song there are always ``ahead`` tracks queued, the nearest neighbours (by the stored
embeddings) of the song playing, never a copy of a recording already queued or played in this queue, never
the same artist twice in a row, each added by its path relative to MPD's music directory. It waits with
``idle player playlist`` between changes, so it costs nothing while a song plays.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger.errors import TaggerError
from tagger.fsutil import path_key
from tagger.lookup.similar import Library, is_duplicate

log = logging.getLogger(__name__)


class MpdError(TaggerError):
    """MPD refused a command or cannot be reached (the address and MPD's own message are named)."""

    exit_code = 1


class MpdClient:
    """Just the protocol: one command, its key/value lines, ``OK`` or ``ACK [error@n] {cmd} message``."""

    def __init__(self, address: str, password: str | None = None, timeout: float = 30.0) -> None:
        self.address = address
        try:
            if address.startswith("/") or address.startswith("@"):
                sock = socket.socket(socket.AF_UNIX)
                try:
                    sock.settimeout(timeout)
                    sock.connect(address if address.startswith("/") else "\0" + address[1:])
                except OSError:
                    sock.close()
                    raise
                self.sock = sock
            else:
                host, _, port = address.rpartition(":") if ":" in address else (address, "", "6600")
                self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        except (OSError, ValueError) as exc:
            raise MpdError(address, f"cannot connect to MPD: {getattr(exc, 'strerror', None) or exc}") from exc
        self.buf = b""
        hello = self._line()
        if not hello.startswith("OK MPD "):
            self.close()
            raise MpdError(address, f"not an MPD server (it said {hello[:60]!r})")
        if password:
            self.command("password", password)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "MpdClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> str:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise MpdError(self.address, f"connection lost: {exc.strerror or exc}") from exc
            if not chunk:
                raise MpdError(self.address, "MPD closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "surrogateescape")

    def command(self, name: str, *args: str, timeout: float | None = None) -> list[tuple[str, str]]:
        quoted = " ".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args)
        self.sock.sendall(f"{name} {quoted}".strip().encode("utf-8", "surrogateescape") + b"\n")
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout if timeout is not None else old)
        try:
            out: list[tuple[str, str]] = []
            while True:
                line = self._line()
                if line == "OK":
                    return out
                if line.startswith("ACK "):
                    raise MpdError(self.address, f"{name}: {line[4:]}")
                key, _, value = line.partition(": ")
                out.append((key, value))
        finally:
            self.sock.settimeout(old)

    def songs(self, name: str, *args: str) -> list[dict[str, str]]:
        """A song list (``playlistinfo``...) as one dict per song; a new ``file`` key starts the next."""
        out: list[dict[str, str]] = []
        for k, v in self.command(name, *args):
            if k == "file":
                out.append({})
            if out:
                out[-1].setdefault(k, v)
        return out


@dataclass
class Filled:
    added: list[str]  # paths relative to the music directory, in queue order
    reason: str = ""  # why nothing was added, when nothing was


def pick_next(lib: Library, seed: dict[str, Any], queued: Sequence[dict[str, Any]], last_artist: str,
              want: int) -> list[dict[str, Any]]:
    """Up to ``want`` tracks to queue after ``queued`` (whose last artist is ``last_artist``): nearest to the
    seed first, no copy of anything queued, never the same artist as the track before it."""
    chosen: list[dict[str, Any]] = []
    taken = list(queued)
    artist = last_artist.casefold()
    for hit in lib.similar(lib.embedding_of(seed), seed, max(4 * want, want + 16)):
        rec = hit.record
        if any(t["path"] == rec["path"] or (t.get("slot") is not None and is_duplicate(
                t, rec, float(lib.embedding_of(t) @ lib.embedding_of(rec)))) for t in taken):
            continue
        a = (rec.get("artist") or "").casefold()
        if a and a == artist:
            continue
        chosen.append(rec)
        taken.append(rec)
        artist = a
        if len(chosen) == want:
            break
    return chosen


def music_directory(client: MpdClient, given: Path | None) -> Path:
    """MPD's music directory: given by the user, or asked of MPD (it answers ``config`` on a local socket)."""
    if given is not None:
        return given
    try:
        found = dict(client.command("config")).get("music_directory")
    except MpdError as exc:
        raise MpdError(client.address, "MPD does not tell its music directory over this connection (only over "
                                       "its Unix socket); give it with --music-dir") from exc
    if not found:
        raise MpdError(client.address, "MPD has no music_directory; give it with --music-dir")
    return Path(found)


def fill_once(client: MpdClient, lib: Library, music_dir: Path, ahead: int) -> Filled:
    """Bring the songs queued after the current one up to ``ahead``."""
    status = dict(client.command("status"))
    if "song" not in status:
        return Filled([], "nothing is playing")
    pos = int(status["song"])
    queue = client.songs("playlistinfo")
    upcoming = queue[pos + 1:]
    if len(upcoming) >= ahead:
        return Filled([], "the queue is full enough")

    def known(song: dict[str, str]) -> dict[str, Any] | None:
        return lib.by_path.get(path_key(music_dir / song["file"]))
    # the song playing is the seed; one tagger does not know (not scanned yet) lends the seat to the last
    # known song before it
    seed = next((r for r in (known(s) for s in reversed(queue[: pos + 1])) if r is not None), None)
    if seed is None:
        return Filled([], f"{queue[pos]['file']} is not in tagger's database (scan it first)")
    queued = [r for r in (known(s) for s in queue) if r is not None]
    last = queue[-1]
    last_artist = str((known(last) or {}).get("artist") or last.get("Artist") or "")
    added = []
    for rec in pick_next(lib, seed, queued, last_artist, ahead - len(upcoming)):
        try:
            rel = os.path.relpath(rec["path"], music_dir)
        except ValueError:
            continue
        if rel.startswith(".."):  # outside MPD's music directory: MPD cannot play it by path
            continue
        client.command("add", rel)
        added.append(rel)
    return Filled(added, "" if added else "no similar track left that MPD can play")


def keep_queue(client: MpdClient, lib_of: Callable[[], Library], music_dir: Path, ahead: int,
               stop: Callable[[], bool] = lambda: False) -> None:
    """Fill, then wait for the player or the queue to change, and fill again, until ``stop()``."""
    while not stop():
        filled = fill_once(client, lib_of(), music_dir, ahead)
        for rel in filled.added:
            log.info("queued %s", rel)
        if not filled.added and filled.reason:
            log.debug("nothing queued: %s", filled.reason)
        client.command("idle", "player", "playlist", timeout=None)
