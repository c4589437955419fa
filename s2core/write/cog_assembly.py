"""s2core.write.cog_assembly: a COG put together from tiled GeoTIFFs that GDAL compressed, their tiles copied
as they are.

GDAL's COG driver compresses a raster from an uncompressed source: for a whole 12-band tile a
2.9 GB scratch file written by strips, read back and compressed after the last strip. Instead
the strips go straight into a DEFLATE-compressed tiled GeoTIFF (GDAL compresses its blocks in
threads while the next strip is read), and so do the overview levels (:mod:`.overviews`). This
module writes what GDAL's COG driver writes around the tiles, and copies the tiles in without
decompressing them (``copy_file_range``: a copy inside the kernel):

* the TIFF header (classic, or BigTIFF past 4 GB) and GDAL's "ghost" structural metadata
  (``LAYOUT=IFDS_BEFORE_DATA``, ``BLOCK_ORDER=ROW_MAJOR``, each tile with its size in 4 bytes
  before it and its last 4 bytes repeated after it), which GDAL reports as ``LAYOUT=COG``;
* every IFD before any tile: the full-resolution image's with the source's tags (georeferencing,
  nodata, GDAL's metadata), then one per overview level (``NewSubfileType`` = reduced image);
* the tiles, the smallest overview's first and the full resolution's last, row-major.

The sources are read with tifffile; GDAL reads the result (tests/write/test_cog_assembly.py).
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import tifffile

#: GeoTIFF tags: on the full-resolution IFD only (GDAL's COGs carry none on their overviews).
_GEO_TAGS = frozenset({33550, 33922, 34264, 34735, 34736, 34737})
_GDAL_METADATA, _NEW_SUBFILE_TYPE, _TILE_OFFSETS, _TILE_BYTECOUNTS = 42112, 254, 324, 325
#: Tags a copy cannot keep as they are (they point into the source file) or that it sets itself.
_REBUILT = frozenset({_NEW_SUBFILE_TYPE, _TILE_OFFSETS, _TILE_BYTECOUNTS, 273, 279, 330})
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_LONG, _LONG8 = 4, 16
#: GDAL's structural metadata, as its COG driver writes it (GDAL >= 3.1)
_GHOST_BODY = ("LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
               "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n ")
_GHOST = f"GDAL_STRUCTURAL_METADATA_SIZE={len(_GHOST_BODY):06d} bytes\n{_GHOST_BODY}".encode("ascii")


class CannotAssemble(ValueError):
    """The sources are not tiled little-endian TIFFs of one layout: the caller uses GDAL's COG driver."""


@dataclass
class _Image:
    """One IFD of the output: its tags ``code -> (type, count, raw little-endian bytes)`` and its tiles
    ``(source index, offset, size)``, row-major."""

    tags: dict[int, tuple[int, int, bytes]]
    tiles: list[tuple[int, int, int]]


def _read_image(path: Path, index: int, overview: bool) -> _Image:
    try:
        return _parse_image(path, index, overview)
    except (CannotAssemble, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile's errors on a file cut short (a full disk while it closed)
        raise OSError(errno.EIO, f"{path.name} is damaged ({str(exc)[:120]})") from None


def _parse_image(path: Path, index: int, overview: bool) -> _Image:
    with tifffile.TiffFile(path) as tif:
        if not len(tif.pages):  # tifffile warns and finds no image in a file cut short
            raise OSError(errno.EIO, f"{path.name} is damaged: no image in it")
        if tif.byteorder != "<" or len(tif.pages) != 1:
            raise CannotAssemble(f"{path.name}: not a little-endian single-image TIFF")
        page = tif.pages.first
        if not page.is_tiled:
            raise CannotAssemble(f"{path.name}: not tiled")
        tags: dict[int, tuple[int, int, bytes]] = {}
        fh = tif.filehandle
        for tag in page.tags.values():
            if tag.code in _REBUILT or (overview and (tag.code in _GEO_TAGS or tag.code == _GDAL_METADATA)):
                continue
            if tag.dtype not in _TYPE_SIZE:
                raise CannotAssemble(f"{path.name}: tag {tag.code} has type {tag.dtype}")
            fh.seek(tag.valueoffset)
            tags[tag.code] = (int(tag.dtype), tag.count, fh.read(tag.count * _TYPE_SIZE[tag.dtype]))
        tiles = [(index, int(o), int(n)) for o, n in zip(page.dataoffsets, page.databytecounts)]
        if any(n == 0 or o == 0 for _, o, n in tiles):  # GDAL writes every tile of a file it closed cleanly
            raise OSError(errno.EIO, f"{path.name} is damaged: a tile was never written")
    if overview:
        tags[_NEW_SUBFILE_TYPE] = (_LONG, 1, struct.pack("<I", 1))  # a reduced-resolution image
    return _Image(tags, tiles)


def _layout(images: list[_Image], big: bool) -> tuple[bytes, list[list[int]], int]:
    """The bytes before the first tile (header, ghost area, IFDs and their values), each image's tile
    offsets, and the end of the file."""
    head = 16 if big else 8
    entry, count_fmt, next_fmt, inline = (20, "<Q", "<Q", 8) if big else (12, "<H", "<I", 4)
    offsets_type = _LONG8 if big else _LONG
    for image in images:  # the tile arrays, with their sizes (offsets filled in below)
        n = len(image.tiles)
        image.tags[_TILE_OFFSETS] = (offsets_type, n, bytes(n * _TYPE_SIZE[offsets_type]))
        image.tags[_TILE_BYTECOUNTS] = (_LONG, n, struct.pack(f"<{n}I", *(size for _, _, size in image.tiles)))
    pos = head + len(_GHOST)
    pos += pos % 2
    ifd_at, value_at = [], []
    for image in images:  # each IFD, then the values that do not fit in its entries
        ifd_at.append(pos)
        pos += struct.calcsize(count_fmt) + entry * len(image.tags) + struct.calcsize(next_fmt)
        at = {}
        for code, (_, _, raw) in sorted(image.tags.items()):
            if len(raw) > inline:
                at[code] = pos
                pos += len(raw) + len(raw) % 2  # values start on a word boundary
        value_at.append(at)
    # the tiles: the smallest overview first, the full resolution last; 4 bytes of size before each
    # tile, its last 4 bytes after it
    data_start = pos
    tile_at: list[list[int]] = [[] for _ in images]
    for k in reversed(range(len(images))):
        for _, _, size in images[k].tiles:
            tile_at[k].append(pos + 4)
            pos += size + 8
    out = bytearray(data_start)
    out[:head] = (b"II+\x00" + struct.pack("<HHQ", 8, 0, ifd_at[0])) if big else (b"II*\x00" + struct.pack("<I", ifd_at[0]))
    out[head:head + len(_GHOST)] = _GHOST
    for k, image in enumerate(images):
        n = len(image.tiles)
        packed = struct.pack(f"<{n}{'Q' if big else 'I'}", *tile_at[k])
        image.tags[_TILE_OFFSETS] = (offsets_type, n, packed)
        p = ifd_at[k]
        struct.pack_into(count_fmt, out, p, len(image.tags))
        p += struct.calcsize(count_fmt)
        for code, (typ, count, raw) in sorted(image.tags.items()):
            struct.pack_into("<HH" + ("Q" if big else "I"), out, p, code, typ, count)
            if len(raw) > inline:
                struct.pack_into("<Q" if big else "<I", out, p + entry - inline, value_at[k][code])
                out[value_at[k][code]: value_at[k][code] + len(raw)] = raw
            else:
                out[p + entry - inline: p + entry - inline + len(raw)] = raw
            p += entry
        struct.pack_into(next_fmt, out, p, ifd_at[k + 1] if k + 1 < len(images) else 0)
    return bytes(out), tile_at, pos


def _copy(src: int, dst: int, offset: int, size: int, at: int) -> None:
    """``size`` bytes at ``offset`` of ``src`` to ``at`` of ``dst``, inside the kernel where it can."""
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(src, dst, size - done, offset + done, at + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = os.pwrite(dst, os.pread(src, min(size - done, 64 << 20), offset + done), at + done)
        if n == 0:
            raise OSError(errno.EIO, f"the source ended {size - done} bytes early")
        done += n


def assemble_cog(full: Path, levels: Sequence[Path], dest: Path, bigtiff: Optional[bool] = None) -> None:
    """Write ``dest`` as a COG of ``full`` (a tiled, compressed GeoTIFF) with ``levels`` (the same, each
    half the size of the one before) as its overviews, copying their tiles as they are. ``bigtiff``:
    None for a classic TIFF unless the file needs BigTIFF's 64-bit offsets (past 4 GB).

    Raises:
        CannotAssemble: a source is not a tiled little-endian TIFF of one image, or the sources differ
            in layout (then nothing is written).
        OSError: a read or a write failed (a full disk), or a source is damaged (cut short); ``dest`` is then
            incomplete: the caller removes it.
    """
    sources = [full, *levels]
    images = [_read_image(p, i, i > 0) for i, p in enumerate(sources)]
    structure = (258, 259, 262, 277, 284, 317, 322, 323, 339)  # bits, codec, bands, interleave, predictor, tiles
    first = {c: images[0].tags.get(c) for c in structure}
    if any({c: image.tags.get(c) for c in structure} != first for image in images[1:]):
        raise CannotAssemble("the overview levels are not laid out as the full-resolution image")
    data = sum(size + 8 for image in images for _, _, size in image.tiles)
    need = data + (1 << 20) + sum(len(raw) for image in images for _, _, raw in image.tags.values())
    wide = any(typ in (16, 17, 18) for image in images for typ, _, _ in image.tags.values())  # BigTIFF's types
    big = (need >= 1 << 32 or wide) if bigtiff is None else bigtiff
    if wide and not big:
        raise CannotAssemble("a tag has one of BigTIFF's 64-bit types: the COG must be a BigTIFF")
    head, tile_at, end = _layout(images, big)
    fds = [os.open(p, os.O_RDONLY) for p in sources]
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.pwrite(out, head, 0)
            for image, offsets in zip(images, tile_at):
                for (i, offset, size), at in zip(image.tiles, offsets):
                    if size < 4:
                        raise CannotAssemble(f"{sources[i].name}: a tile of {size} bytes")
                    os.pwrite(out, struct.pack("<I", size), at - 4)
                    _copy(fds[i], out, offset, size, at)
                    os.pwrite(out, os.pread(fds[i], 4, offset + size - 4), at + size)
            if os.fstat(out).st_size != end:
                raise OSError(errno.EIO, f"{dest.name} is {os.fstat(out).st_size} bytes, not {end}")
        finally:
            os.close(out)
    finally:
        for fd in fds:
            os.close(fd)
