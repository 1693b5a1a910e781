"""The numpy-only TF checkpoint reader: every tensor verified; damage gives a clear error, never garbage."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from exporter.checkpoint import CheckpointError, _Table, parse_bundle
from exporter.crc32c import _raw_bytes, crc32c, mask, unmask

VARIANTS = {"MTT_musicnn": 150, "MSD_musicnn": 150, "MTT_vgg": 86, "MSD_vgg": 86}


def test_crc32c_check_value_and_long_buffers():
    assert crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(1)
    for n in (0, 1, 1023, 1024 * 8, 1024 * 8 + 17, 100_003):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == _raw_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert unmask(mask(0xDEADBEEF)) == 0xDEADBEEF


def _files(archive, variant):
    return archive.read(f"{variant}/.index"), archive.read(f"{variant}/.data-00000-of-00001")


@pytest.mark.parametrize("variant", VARIANTS)
def test_reads_every_tensor_with_checksums(weights_archive, variant):
    index, data = _files(weights_archive, variant)
    tensors = parse_bundle(index, data, index_name="i", data_name="d", verify_tensors=True)
    assert len(tensors) == VARIANTS[variant]
    assert sum(t.nbytes for t in tensors.values()) == len(data)  # contiguous, nothing skipped
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in tensors.values())


def _reseal(index: bytes, offset: int, size: int) -> bytes:
    """Recompute one block's trailer CRC, so a deliberate edit reaches the entry-level checks."""
    block = index[offset:offset + size + 1]
    crc = mask(crc32c(block))
    return index[:offset + size + 1] + struct.pack("<I", crc) + index[offset + size + 5:]


def test_corrupted_tensor_bytes_are_rejected(weights_archive):
    index, data = _files(weights_archive, "MTT_vgg")
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    with pytest.raises(CheckpointError, match="CRC32C mismatch"):
        parse_bundle(index, bytes(bad), index_name="i", data_name="d")


def test_truncated_data_is_rejected(weights_archive):
    index, data = _files(weights_archive, "MTT_vgg")
    with pytest.raises(CheckpointError, match="past the end"):
        parse_bundle(index, data[: len(data) - 100], index_name="i", data_name="d")


@pytest.mark.parametrize("cut", [0, 10, 47, 1000, -1])
def test_truncated_index_is_rejected(weights_archive, cut):
    index, data = _files(weights_archive, "MTT_vgg")
    with pytest.raises(CheckpointError):
        parse_bundle(index[:cut], data, index_name="i", data_name="d")


def test_corrupted_index_block_is_rejected(weights_archive):
    index, data = _files(weights_archive, "MTT_vgg")
    bad = bytearray(index)
    bad[100] ^= 0x40
    with pytest.raises(CheckpointError, match="CRC32C mismatch"):
        parse_bundle(bytes(bad), data, index_name="i", data_name="d")


def test_compressed_block_is_rejected(weights_archive):
    index, data = _files(weights_archive, "MTT_vgg")
    handle = _Table("i", index).index_handle
    items = _Table("i", index).entries(_Table("i", index).block(handle))
    data_handle, _ = _Table._handle(items[0][1], 0)
    bad = bytearray(index)
    bad[data_handle[0] + data_handle[1]] = 1  # snappy
    with pytest.raises(CheckpointError, match="compression type 1"):
        parse_bundle(_reseal(bytes(bad), *data_handle), data, index_name="i", data_name="d")


def test_other_dtypes_are_rejected(weights_archive):
    index, data = _files(weights_archive, "MTT_vgg")
    # Entries start with the dtype field "08 01"; turn the first one after the header into DT_DOUBLE.
    table = _Table("i", index)
    data_handle, _ = _Table._handle(table.entries(table.block(table.index_handle))[0][1], 0)
    pos = index.index(b"\x08\x01\x12", index.index(b"1CNN/bias"))
    bad = bytearray(index)
    bad[pos + 1] = 2
    with pytest.raises(CheckpointError, match="dtype code 2"):
        parse_bundle(_reseal(bytes(bad), *data_handle), data, index_name="i", data_name="d")


def test_missing_files_name_the_path(tmp_path):
    from exporter.checkpoint import read_checkpoint

    with pytest.raises(CheckpointError, match=str(tmp_path / "nope.index")):
        read_checkpoint(tmp_path / "nope")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="magic"):
        parse_bundle(os.urandom(4000), b"", index_name="x.index", data_name="d")
