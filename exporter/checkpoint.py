"""Read TensorFlow 1 "tensor bundle" checkpoints with numpy only.

A bundle is ``<prefix>.index`` (a LevelDB-style sorted table mapping variable names to
``BundleEntryProto`` records) plus ``<prefix>.data-00000-of-00001`` (raw little-endian tensor bytes).
Everything is verified before a single weight is returned: the footer magic, every block's
masked CRC32C, the bundle header, and each tensor's own CRC. Anything this reader does not
understand (compressed blocks, non-float32 dtypes, sliced or sharded variables, big-endian
bundles) is rejected, because guessing would hand the model garbage weights.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import ExporterError

from .crc32c import crc32c, unmask

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_DT_FLOAT = 1


class CheckpointError(ExporterError):
    """A checkpoint file is missing, damaged or uses a feature this reader does not support."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class _Entry:
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc_masked: int | None
    has_slices: bool


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end of its buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode a protobuf message into (field number, value) pairs; enough for bundle protos."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos:pos + length]
            if len(value) != length:
                raise ValueError("length-delimited field runs past the end")
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _parse_entry(value: bytes) -> _Entry:
    dtype = shard = offset = size = 0
    crc = None
    shape: list[int] = []
    slices = False
    for number, v in _proto_fields(value):
        if number == 1:
            dtype = int(v)  # type: ignore[arg-type]
        elif number == 2:
            for dn, dv in _proto_fields(v):  # type: ignore[arg-type]
                if dn == 2:
                    dim = dict(_proto_fields(dv))  # type: ignore[arg-type]
                    shape.append(int(dim.get(1, 0)))  # type: ignore[arg-type]
                elif dn == 3 and dv:
                    raise ValueError("shape marked unknown_rank")
        elif number == 3:
            shard = int(v)  # type: ignore[arg-type]
        elif number == 4:
            offset = int(v)  # type: ignore[arg-type]
        elif number == 5:
            size = int(v)  # type: ignore[arg-type]
        elif number == 6:
            crc = int(v)  # type: ignore[arg-type]
        elif number == 7:
            slices = True
    return _Entry(dtype, tuple(shape), shard, offset, size, crc, slices)


class _Table:
    """Just enough of a LevelDB table reader: verified blocks, sequential iteration."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.data = data
        if len(data) < _FOOTER_LEN:
            raise CheckpointError(path, f"index file is {len(data)} bytes, too short for a table footer")
        footer = data[-_FOOTER_LEN:]
        (magic,) = struct.unpack("<Q", footer[-8:])
        if magic != _TABLE_MAGIC:
            raise CheckpointError(path, "index file has no table magic number (not a TF checkpoint, or truncated)")
        try:
            _, pos = self._handle(footer, 0)  # metaindex: unused
            self.index_handle, _ = self._handle(footer, pos)
        except ValueError as exc:
            raise CheckpointError(path, f"corrupt table footer: {exc}") from None

    @staticmethod
    def _handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
        offset, pos = _varint(buf, pos)
        size, pos = _varint(buf, pos)
        return (offset, size), pos

    def block(self, handle: tuple[int, int]) -> bytes:
        offset, size = handle
        end = offset + size + 5
        if end > len(self.data):
            raise CheckpointError(self.path, f"block at {offset} (+{size}) runs past the end of the file")
        contents = self.data[offset:offset + size]
        trailer = self.data[offset + size:end]
        if len(contents) != size or len(trailer) != 5:
            raise CheckpointError(self.path, f"block at {offset} is truncated")
        if trailer[0] != 0:
            raise CheckpointError(self.path, f"block at {offset} uses compression type {trailer[0]}; only uncompressed tables are supported")
        (stored,) = struct.unpack("<I", trailer[1:])
        if crc32c(contents + trailer[:1]) != unmask(stored):
            raise CheckpointError(self.path, f"block at {offset}: CRC32C mismatch (the file is corrupted)")
        return contents

    @staticmethod
    def entries(block: bytes) -> list[tuple[bytes, bytes]]:
        if len(block) < 4:
            raise ValueError("block shorter than its restart count")
        (n_restarts,) = struct.unpack("<I", block[-4:])
        limit = len(block) - 4 - 4 * n_restarts
        if limit < 0:
            raise ValueError("restart array larger than the block")
        out: list[tuple[bytes, bytes]] = []
        key = b""
        pos = 0
        while pos < limit:
            shared, pos = _varint(block, pos)
            unshared, pos = _varint(block, pos)
            vlen, pos = _varint(block, pos)
            if shared > len(key) or pos + unshared + vlen > limit:
                raise ValueError("entry runs past the end of its block")
            key = key[:shared] + block[pos:pos + unshared]
            pos += unshared
            out.append((key, block[pos:pos + vlen]))
            pos += vlen
        return out

    def items(self) -> list[tuple[bytes, bytes]]:
        result: list[tuple[bytes, bytes]] = []
        try:
            for _, handle_bytes in self.entries(self.block(self.index_handle)):
                handle, _ = self._handle(handle_bytes, 0)
                result.extend(self.entries(self.block(handle)))
        except ValueError as exc:
            raise CheckpointError(self.path, f"corrupt table block: {exc}") from None
        return result


def read_checkpoint(prefix: Path | str, *, verify_tensors: bool = True,
                    skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Return every float32 variable of the checkpoint at ``prefix`` as writable numpy arrays.

    ``prefix`` is the path without ``.index`` (the musicnn wheel's prefix ends in ``/``: its files
    are literally named ``.index`` and ``.data-00000-of-00001``). Variables whose name contains one
    of ``skip`` (for example ``"/Adam"``) are neither checked nor returned.
    """
    prefix = str(prefix)
    index_path = Path(prefix + ".index")
    data_path = Path(f"{prefix}.data-00000-of-00001")
    blobs = []
    for path in (index_path, data_path):
        try:
            blobs.append(path.read_bytes())
        except OSError as exc:
            raise CheckpointError(path, f"cannot read checkpoint file: {exc.strerror or exc}") from None
    return parse_bundle(blobs[0], blobs[1], index_name=str(index_path), data_name=str(data_path),
                        verify_tensors=verify_tensors, skip=skip)


def parse_bundle(index_bytes: bytes, data_bytes: bytes, *, index_name: str, data_name: str,
                 verify_tensors: bool = True, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Parse an in-memory bundle (``.index`` and single data shard); names are used in errors only."""
    index_path, data_path = Path(index_name), Path(data_name)
    data = data_bytes
    items = _Table(index_path, index_bytes).items()
    if not items or items[0][0] != b"":
        raise CheckpointError(index_path, "no bundle header (first key must be empty)")
    try:
        header = dict(_proto_fields(items[0][1]))
    except ValueError as exc:
        raise CheckpointError(index_path, f"corrupt bundle header: {exc}") from None
    num_shards = int(header.get(1, 0))  # type: ignore[arg-type]
    if int(header.get(2, 0)) != 0:  # type: ignore[arg-type]
        raise CheckpointError(index_path, "big-endian bundles are not supported")
    if num_shards != 1:
        raise CheckpointError(index_path, f"{num_shards} data shards; only single-shard checkpoints are supported")

    tensors: dict[str, np.ndarray] = {}
    for raw_key, value in items[1:]:
        name = raw_key.decode("utf-8", "replace")
        if any(s in name for s in skip):
            continue
        try:
            entry = _parse_entry(value)
        except ValueError as exc:
            raise CheckpointError(index_path, f"variable {name!r}: corrupt entry: {exc}") from None
        if entry.dtype != _DT_FLOAT:
            raise CheckpointError(index_path, f"variable {name!r} has dtype code {entry.dtype}; only float32 (1) is supported")
        if entry.has_slices:
            raise CheckpointError(index_path, f"variable {name!r} is partitioned into slices; not supported")
        if entry.shard_id != 0:
            raise CheckpointError(index_path, f"variable {name!r} lives in shard {entry.shard_id}; only one shard is supported")
        n_values = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
        if entry.size != 4 * n_values:
            raise CheckpointError(index_path, f"variable {name!r}: {entry.size} bytes do not fit shape {entry.shape}")
        if entry.offset + entry.size > len(data):
            raise CheckpointError(data_path, f"variable {name!r} ends at byte {entry.offset + entry.size}, "
                                             f"past the end of the {len(data)}-byte data file (truncated?)")
        raw = data[entry.offset:entry.offset + entry.size]
        if verify_tensors:
            if entry.crc_masked is None:
                raise CheckpointError(index_path, f"variable {name!r} has no checksum to verify")
            if crc32c(raw) != unmask(entry.crc_masked):
                raise CheckpointError(data_path, f"variable {name!r}: CRC32C mismatch (the data file is corrupted)")
        tensors[name] = np.frombuffer(raw, dtype="<f4").reshape(entry.shape).astype(np.float32)
    return tensors
