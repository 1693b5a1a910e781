"""CRC32C (Castagnoli) with numpy only, fast enough to verify whole checkpoints.

TensorFlow protects every table block and every tensor of a checkpoint with a *masked* CRC32C.
A byte-at-a-time Python loop needs about a second per 10 MB, so long buffers are cut into equal
chunks whose CRCs advance in lockstep as one numpy vector, and the chunk CRCs are then joined
with the linear "append n zero bytes" operator of the CRC register.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
_CHUNK = 1024


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_TABLE_PY = [int(v) for v in _TABLE]


def _raw_bytes(reg: int, data: bytes | memoryview) -> int:
    """Advance a raw (unconditioned) register over ``data`` one byte at a time."""
    t = _TABLE_PY
    for b in bytes(data):
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _raw_lockstep(chunks: np.ndarray) -> np.ndarray:
    """Raw CRC (register starts at 0) of every row of a (n, m) uint8 array at once."""
    reg = np.zeros(chunks.shape[0], dtype=np.uint32)
    for col in chunks.T:
        reg = _TABLE[(reg ^ col) & 0xFF] ^ (reg >> 8)
    return reg


@lru_cache(maxsize=None)
def _zeros_operator(n_bytes: int) -> tuple[tuple[int, ...], ...]:
    """Byte-wise lookup tables of the GF(2)-linear map 'feed n zero bytes' on a raw register.

    The map is linear, so it is fixed by its action on the 32 basis vectors; four 256-entry
    tables (one per register byte) then apply it in four lookups.
    """
    basis = [_raw_bytes(1 << bit, bytes(n_bytes)) for bit in range(32)]
    tables = []
    for byte_index in range(4):
        row = []
        for value in range(256):
            out = 0
            for bit in range(8):
                if value >> bit & 1:
                    out ^= basis[byte_index * 8 + bit]
            row.append(out)
        tables.append(tuple(row))
    return tuple(tables)


def _shift(reg: int, n_bytes: int) -> int:
    t = _zeros_operator(n_bytes)
    return t[0][reg & 0xFF] ^ t[1][reg >> 8 & 0xFF] ^ t[2][reg >> 16 & 0xFF] ^ t[3][reg >> 24]


def crc32c(data: bytes | memoryview) -> int:
    """Standard CRC32C of ``data`` (init and final xor 0xFFFFFFFF)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    n_chunks = len(buf) // _CHUNK
    reg = 0xFFFFFFFF
    if n_chunks >= 8:
        chunk_crcs = _raw_lockstep(buf[: n_chunks * _CHUNK].reshape(n_chunks, _CHUNK))
        for c in chunk_crcs.tolist():
            reg = _shift(reg, _CHUNK) ^ c
        rest = buf[n_chunks * _CHUNK:]
    else:
        rest = buf
    reg = _raw_bytes(reg, rest.tobytes())
    return reg ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Undo TensorFlow's CRC masking (rotate right by 15 after subtracting a constant)."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
