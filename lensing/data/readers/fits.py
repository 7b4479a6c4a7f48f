"""The FITS part of the image reader: choosing an HDU and reading its 2-D image, safely.

Before astropy reads any data, every header is scanned here and the data size it claims
(BITPIX, NAXISn, PCOUNT, GCOUNT) is checked against the bytes that follow it, so a lying
header is an error, not a huge allocation or a half-read array. Gzipped files (recognized by
their first bytes, whatever the name) are decompressed in memory up to
:data:`lensing.data.readers.checks.MAX_FILE_BYTES`. astropy is imported on first use, not with
this module.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from dataclasses import dataclass

import numpy as np

from lensing.data.readers import checks
from lensing.data.readers.checks import ImageError

BLOCK = 2880  # FITS headers and data come in blocks of this many bytes
CARD = 80  # bytes per header card
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class HduInfo:
    """What one HDU's header says. ``shape`` is NumPy order (NAXISn ... NAXIS1)."""

    index: int
    name: str  # EXTNAME, or "PRIMARY" for HDU 0 without one
    kind: str  # "image", "compressed image", or the XTENSION value (e.g. "BINTABLE")
    shape: tuple[int, ...]
    end: int  # byte offset just past this HDU's data (unpadded)

    @property
    def is_image(self) -> bool:
        return self.kind in ("image", "compressed image")

    @property
    def has_data(self) -> bool:
        return self.is_image and len(self.shape) > 0 and math.prod(self.shape) > 0

    def describe(self) -> str:
        what = "x".join(map(str, self.shape)) if self.has_data else "no data"
        return f"{self.index} {self.name!r} ({self.kind}, {what})"


def read_fits_image(data: bytes, *, hdu: int | str | None = None) -> np.ndarray:
    """The 2-D numeric image of one HDU of a FITS file's bytes (plain or gzipped).

    hdu: None (the primary HDU if it holds data, else the first image extension that does),
        an index (int) or an EXTNAME (str, any case; "PRIMARY" is HDU 0).
    Returns the data as astropy scales it (BSCALE/BZERO applied), shape (H, W) or (1, H, W).
    Raises ImageError: not FITS, a header that claims more data than the file holds, a missing
    HDU (naming those that exist), an HDU that is no image or holds no data, data that is not
    2-D (a leading axis of 1 is allowed), a non-numeric result.
    """
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data, checks.MAX_FILE_BYTES)
    hdus = scan_headers(data)
    chosen = _choose(hdus, hdu)
    checks.image_plane(chosen.shape, trailing=False)
    if chosen.kind == "compressed image":
        # The table holds the compressed bytes; the image it expands to is claimed separately.
        claimed = math.prod(chosen.shape) * 8
        if claimed > checks.MAX_FILE_BYTES:
            raise ImageError(
                f"HDU {chosen.index} decompresses to {chosen.shape} pixels; the limit is "
                f"{checks.MAX_FILE_BYTES} bytes"
            )
    # Only the bytes up to the chosen HDU, padded to whole blocks: astropy sees no truncation.
    end = -(-chosen.end // BLOCK) * BLOCK
    buffer = data[:end] + bytes(max(end - len(data), 0))
    from astropy.io import fits  # heavy: loaded with the first FITS file, not with lensing

    try:
        with fits.open(io.BytesIO(buffer), memmap=False, lazy_load_hdus=True) as hdul:
            array = np.array(hdul[chosen.index].data)
    except Exception as err:  # astropy raises many types for damaged files
        raise ImageError(
            f"unreadable FITS data in HDU {chosen.index} ({type(err).__name__}: {err})"
        ) from None
    if array.dtype.kind not in "fiu":
        raise ImageError(f"HDU {chosen.index} data of dtype {array.dtype}; expected numbers")
    if array.shape != chosen.shape:
        raise ImageError(f"HDU {chosen.index} read as {array.shape}; header says {chosen.shape}")
    return array


def scan_headers(data: bytes) -> list[HduInfo]:
    """Every HDU's header in a FITS file's bytes, with its data size checked against the file.

    Bytes after the last HDU that do not start an extension are ignored, as FITS readers do.
    """
    from astropy.io import fits  # heavy: loaded with the first FITS file, not with lensing

    if not data.startswith(b"SIMPLE  "):
        raise ImageError("not a FITS file (it does not start with a SIMPLE card)")
    hdus, offset = [], 0
    while offset < len(data) and (not hdus or data[offset : offset + 8] == b"XTENSION"):
        index = len(hdus)
        header_end = _header_end(data, offset, index)
        try:
            header = fits.Header.fromstring(data[offset:header_end])
        except Exception as err:
            raise ImageError(f"unreadable header in HDU {index} ({err})") from None
        info, size = _describe_header(header, index, header_end)
        held = len(data) - header_end
        if size > held:
            raise ImageError(
                f"HDU {index} header claims {size} bytes of data (BITPIX and NAXIS) but the "
                f"file holds only {held} bytes after it"
            )
        hdus.append(info)
        offset = header_end + -(-size // BLOCK) * BLOCK
    return hdus


def _header_end(data: bytes, offset: int, index: int) -> int:
    """Offset just past the block holding the END card of the header starting at ``offset``."""
    found = data.find(b"END     ", offset)
    while found >= 0 and (found - offset) % CARD:  # "END" inside a card's text is no END card
        found = data.find(b"END     ", found + 1)
    if found < 0:
        raise ImageError(f"HDU {index} header has no END card (the file is truncated or not FITS)")
    return offset + ((found - offset) // BLOCK + 1) * BLOCK


def _describe_header(header, index: int, header_end: int) -> tuple[HduInfo, int]:
    """The HduInfo of a parsed header and the size in bytes of the data it claims."""
    bitpix = _keyword(header, "BITPIX", None, index)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise ImageError(f"HDU {index} BITPIX {bitpix!r}; expected 8, 16, 32, 64, -32 or -64")
    naxis = _naxis(header, "", index)
    axes = [_keyword(header, f"NAXIS{i}", None, index) for i in range(1, naxis + 1)]
    groups = index == 0 and header.get("GROUPS") is True and axes[:1] == [0]
    counted = axes[1:] if groups else axes
    per_group = _keyword(header, "PCOUNT", 0, index) + (math.prod(counted) if axes else 0)
    size = abs(bitpix) // 8 * _keyword(header, "GCOUNT", 1, index) * per_group
    xtension = str(header.get("XTENSION", "")).strip().upper()
    name = str(header.get("EXTNAME", "PRIMARY" if index == 0 else "")).strip()
    shape = tuple(reversed(axes))
    if header.get("ZIMAGE") is True and xtension == "BINTABLE":
        kind = "compressed image"
        zaxes = range(1, 1 + _naxis(header, "Z", index))
        shape = tuple(reversed([_keyword(header, f"ZNAXIS{i}", None, index) for i in zaxes]))
    elif (index == 0 and not groups) or xtension == "IMAGE":
        kind = "image"
    else:
        kind = xtension or "random groups"
    return HduInfo(index, name, kind, shape, header_end + size), size


def _naxis(header, prefix: str, index: int) -> int:
    value = header.get(f"{prefix}NAXIS", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 999:
        raise ImageError(f"HDU {index} {prefix}NAXIS {value!r}; expected an int from 0 to 999")
    return value


def _keyword(header, key: str, default: int | None, index: int) -> int:
    """An integer keyword, non-negative unless it is BITPIX; missing means ``default``."""
    value = header.get(key, default)
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (value < 0 and key != "BITPIX"):
        raise ImageError(f"HDU {index} {key} {value!r}; expected a non-negative int")
    return value


def _choose(hdus: list[HduInfo], hdu: int | str | None) -> HduInfo:
    listing = "; ".join(h.describe() for h in hdus)
    if hdu is None:
        found = next((h for h in hdus if h.has_data), None)
        if found is None:
            raise ImageError(f"no HDU holds image data; the file has: {listing}")
        return found
    if isinstance(hdu, int):
        if not 0 <= hdu < len(hdus):
            raise ImageError(f"no HDU {hdu}; the file has {len(hdus)}: {listing}")
        chosen = hdus[hdu]
    else:
        chosen = next((h for h in hdus if h.name.upper() == hdu.strip().upper()), None)
        if chosen is None:
            raise ImageError(f"no HDU named {hdu!r}; the file has: {listing}")
    if not chosen.is_image:
        raise ImageError(f"HDU {chosen.describe()} is not an image")
    if not chosen.has_data:
        raise ImageError(f"HDU {chosen.describe()} holds no data")
    return chosen


def _gunzip(data: bytes, limit: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise ImageError(f"not a readable gzip file ({err})") from None
    if len(out) > limit:
        raise ImageError(f"decompresses to more than the limit of {limit} bytes")
    return out
