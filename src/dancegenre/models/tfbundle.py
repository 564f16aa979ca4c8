"""A small reader of TensorFlow's checkpoint format (the "tensor bundle"), no TensorFlow.

A TF1/TF2 checkpoint is two files: ``<prefix>.index``, a LevelDB-style sorted table
that maps each variable name to a ``BundleEntryProto`` (dtype, shape, shard, offset,
size, masked CRC32C), and ``<prefix>.data-00000-of-00001``, the tensors' raw bytes
back to back.  This module reads both from bytes, checks every block and tensor
checksum, and returns numpy arrays.  Only what the musicnn checkpoints use is
supported: uncompressed tables, one shard, little-endian float32/float64/int32/int64
tensors; anything else is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import struct

import numpy as np

from dancegenre.errors import CheckpointError

_MAGIC = 0xDB4775248B80FB57  # LevelDB table footer magic
_FOOTER = 48
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 9: np.dtype("<i8")}  # TF DataType enum


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as LevelDB and TensorFlow compute it."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    """LevelDB stores CRCs masked (rotated and offset) so a CRC of CRCs stays strong."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError("corrupt checkpoint index: a number runs past its block")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a serialized protobuf message."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise CheckpointError(f"corrupt checkpoint index: protobuf wire type {wire}")
        if pos > len(buf):
            raise CheckpointError("corrupt checkpoint index: a protobuf field runs past its entry")
        out.append((number, wire, value))
    return out


def _block(data: bytes, handle: bytes, pos: int = 0) -> tuple[bytes, int]:
    """The contents of the block a handle points at, after checking its trailer CRC."""
    offset, pos = _varint(handle, pos)
    size, pos = _varint(handle, pos)
    if offset + size + 5 > len(data):
        raise CheckpointError("truncated checkpoint index: a block lies past the end of the file")
    contents = data[offset : offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack("<I", data[offset + size + 1 : offset + size + 5])
    if crc32c(contents + bytes([kind])) != _unmask(stored):
        raise CheckpointError("corrupt checkpoint index: a block checksum does not match")
    if kind != 0:
        raise CheckpointError(f"compressed checkpoint index (type {kind}) is not supported")
    return contents, pos


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of one table block (keys are prefix-compressed)."""
    if len(block) < 4:
        raise CheckpointError("corrupt checkpoint index: a block is too short")
    (restarts,) = struct.unpack("<I", block[-4:])
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CheckpointError("corrupt checkpoint index: bad restart array")
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > end:
            raise CheckpointError("corrupt checkpoint index: an entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + vlen]))
        pos += vlen
    return out


def read_index(index: bytes) -> dict[str, dict]:
    """Tensor name -> {dtype, shape, shard, offset, size, crc32c} from an ``.index`` file."""
    if len(index) < _FOOTER:
        raise CheckpointError("truncated checkpoint index: shorter than its footer")
    footer = index[-_FOOTER:]
    if int.from_bytes(footer[-8:], "little") != _MAGIC:
        raise CheckpointError("not a TensorFlow checkpoint index (no table magic): truncated or another file")
    _, pos = _varint(footer, 0)  # the metaindex handle (offset, size): not needed
    _, pos = _varint(footer, pos)
    index_block, _ = _block(index, footer, pos)
    tensors: dict[str, dict] = {}
    for _, handle in _entries(index_block):
        block, _ = _block(index, handle)
        for key, value in _entries(block):
            if key == b"":  # BundleHeaderProto: num_shards (1), endianness (2), version (3)
                header = {n: v for n, _, v in _proto_fields(value)}
                if header.get(1, 1) != 1 or header.get(2, 0) != 0:
                    raise CheckpointError("only single-shard little-endian checkpoints are supported")
                continue
            entry = {"dtype": 0, "shape": [], "shard": 0, "offset": 0, "size": 0, "crc32c": None, "slices": False}
            for number, _, v in _proto_fields(value):
                if number == 1:
                    entry["dtype"] = v
                elif number == 2:  # TensorShapeProto: repeated Dim (2) {size (1)}
                    for dn, _, dim in _proto_fields(v):  # type: ignore[arg-type]
                        if dn == 2:
                            size = {n: x for n, _, x in _proto_fields(dim)}.get(1, 0)  # type: ignore[arg-type]
                            entry["shape"].append(int(size))
                elif number == 3:
                    entry["shard"] = v
                elif number == 4:
                    entry["offset"] = v
                elif number == 5:
                    entry["size"] = v
                elif number == 6:
                    entry["crc32c"] = v
                elif number == 7:
                    entry["slices"] = True
            tensors[key.decode("utf-8", "replace")] = entry
    if not tensors:
        raise CheckpointError("the checkpoint index lists no tensors")
    return tensors


def read_bundle(index: bytes, data: bytes, *, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every tensor (or those in ``names``) of a checkpoint, as numpy arrays.

    Parameters
    ----------
    index : bytes of ``<prefix>.index``.
    data : bytes of ``<prefix>.data-00000-of-00001``.
    names : tensors to read; None reads all of them.

    Raises
    ------
    CheckpointError
        A malformed or truncated file, a tensor past the end of the data, a checksum
        that does not match, a missing name, or a layout this reader does not support.
    """
    entries = read_index(index)
    wanted = list(entries) if names is None else names
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        if name not in entries:
            raise CheckpointError(f"the checkpoint holds no tensor {name!r}")
        e = entries[name]
        if e["slices"] or e["shard"] != 0:
            raise CheckpointError(f"tensor {name!r} is sliced or sharded: not supported")
        if e["dtype"] not in _DTYPES:
            raise CheckpointError(f"tensor {name!r} has TF dtype {e['dtype']}: not supported")
        dtype = _DTYPES[e["dtype"]]
        count = int(np.prod(e["shape"])) if e["shape"] else 1
        if count * dtype.itemsize != e["size"]:
            raise CheckpointError(f"tensor {name!r}: size {e['size']} does not match shape {e['shape']}")
        end = e["offset"] + e["size"]
        if end > len(data):
            raise CheckpointError(f"truncated checkpoint data: tensor {name!r} ends at byte {end}, "
                                  f"the file has {len(data)}")
        raw = data[e["offset"] : end]
        if e["crc32c"] is not None and crc32c(raw) != _unmask(e["crc32c"]):
            raise CheckpointError(f"checkpoint data corrupt: checksum of tensor {name!r} does not match")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).astype(dtype.newbyteorder("="))
    return out


__all__ = ["crc32c", "read_bundle", "read_index"]
