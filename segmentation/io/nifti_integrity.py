"""Detect truncated NIfTI files, which ITK's NIfTI reader silently pads with zeros.

The header gives the data offset, the voxel count and the bits per voxel; the file (or, for .nii.gz,
its decompressed stream) must be at least that long.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from segmentation.errors import StudyReadError

# (header size, byte offsets and struct codes of: dim[8], bitpix, vox_offset) for NIfTI-1 and NIfTI-2
_LAYOUTS = {348: ((40, "8h"), (72, "h"), (108, "f")), 540: ((16, "8q"), (14, "h"), (168, "q"))}
_CHUNK = 1 << 22


def check_nifti_complete(path: Path) -> None:
    """Raise StudyReadError if the NIfTI file at `path` holds fewer bytes than its header promises."""
    compressed = path.name.lower().endswith(".gz")
    try:
        expected = _expected_size(_head(path, compressed))
        complete = _stream_holds(path, expected) if compressed else path.stat().st_size >= expected
    except (OSError, EOFError, zlib.error, struct.error, ValueError):
        complete = False
    if not complete:
        raise StudyReadError(f"{path} is truncated or corrupt: it holds less voxel data than its header says")


def _head(path: Path, compressed: bool) -> bytes:
    with gzip.open(path, "rb") if compressed else open(path, "rb") as stream:
        return stream.read(540)


def _expected_size(head: bytes) -> int:
    for endian in "<>":
        header_size = struct.unpack_from(f"{endian}i", head, 0)[0]
        if header_size in _LAYOUTS:
            (dim_at, dim_code), (bitpix_at, bitpix_code), (offset_at, offset_code) = _LAYOUTS[header_size]
            dims = struct.unpack_from(endian + dim_code, head, dim_at)
            bitpix = struct.unpack_from(endian + bitpix_code, head, bitpix_at)[0]
            offset = int(struct.unpack_from(endian + offset_code, head, offset_at)[0])
            voxels = 1
            for size in dims[1 : dims[0] + 1]:
                voxels *= max(int(size), 1)
            return max(offset, header_size) + voxels * bitpix // 8
    raise ValueError("not a NIfTI header")


def _stream_holds(path: Path, expected: int) -> bool:
    """Whether the gzip stream decompresses to at least `expected` bytes.

    The gzip trailer stores the uncompressed size modulo 2**32, which settles the usual single-member
    file without decompressing it; anything else is decompressed once to count.
    """
    with open(path, "rb") as raw:
        raw.seek(-4, 2)
        if struct.unpack("<I", raw.read(4))[0] == expected % (1 << 32):
            return True
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            total += len(chunk)
    return total >= expected

