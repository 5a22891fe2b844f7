"""Reading photos robustly and writing images atomically (no ``bpy``).

:func:`load_image` returns an 8-bit RGB array whatever the file holds (EXIF orientation applied;
RGBA, greyscale, palette, 16-bit, float and CMYK converted) or raises :class:`ImageError` with a
message that says what is wrong with the file and what to do.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import write_bytes_atomic

__all__ = ["ImageError", "ImageInfo", "encode_png", "load_image", "save_png_atomic", "MIN_SIDE", "MAX_PIXELS"]

MIN_SIDE = 64  # px: smaller images cannot hold a face the networks can read
MAX_PIXELS = 200_000_000  # refuse decoding beyond this (a 12000 x 9000 photo is 108 MP)


class ImageError(ValueError):
    """The image cannot be used; the message names the file and the reason."""


@dataclass
class ImageInfo:
    """What :func:`load_image` found and did."""

    path: str
    format: str | None
    mode: str
    size: tuple[int, int]  # (width, height) after EXIF orientation
    exif_transposed: bool = False
    notes: list[str] = field(default_factory=list)


def _to_rgb8(img, notes: list[str]) -> np.ndarray:
    """PIL image of any mode -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if mode == "F":
            hi = float(a.max())
            scale = 255.0 if hi <= 1.0 else 255.0 / hi
        else:
            scale = 255.0 / 65535.0 if (mode.startswith("I;16") or a.max() > 255) else 1.0
        if scale != 1.0:
            notes.append(f"converted {mode} to 8 bits")
        g = np.clip(a * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        notes.append("composited transparency over grey")
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if mode == "CMYK":
        notes.append("converted CMYK to RGB")
    return np.asarray(img if mode == "RGB" else img.convert("RGB"))


def load_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageInfo]:
    """Read a photo as RGB.

    Returns
    -------
    rgb : (H, W, 3) uint8, row 0 at the top, EXIF orientation applied.
    info : ImageInfo

    Raises
    ------
    ImageError
        Missing, empty, not an image, truncated or corrupt, too small (< 64 px a side) or
        too large (> 200 megapixels).
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    p = Path(path)
    name = str(p)
    try:
        if not p.exists():
            raise ImageError(f"{name}: no such file")
        if p.is_dir():
            raise ImageError(f"{name}: is a folder, not an image")
        size = p.stat().st_size
    except OSError as exc:  # e.g. a name longer than the system allows
        raise ImageError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(p) as img:
                    fmt = img.format
                    w, h = img.size
                    if w * h > MAX_PIXELS:
                        raise ImageError(
                            f"{name}: {w}x{h} pixels is too large (limit {MAX_PIXELS // 1_000_000} MP); "
                            "downscale it first"
                        )
                    img.load()
                    orientation = img.getexif().get(0x0112, 1)
                    exif_done = orientation not in (1, None)
                    upright = ImageOps.exif_transpose(img) if exif_done else img
                    notes: list[str] = []
                    rgb = _to_rgb8(upright if upright is not None else img, notes)
                    mode = img.mode
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except ImageError:
        raise
    except PermissionError as exc:
        raise ImageError(f"{name}: cannot read the file ({exc.strerror or 'permission denied'})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read (is it really {p.suffix or 'an image'}?)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: too large to decode safely ({exc})") from None
    except OSError as exc:
        raise ImageError(f"{name}: truncated or corrupt image ({exc})") from None
    except (ValueError, SyntaxError, MemoryError) as exc:
        raise ImageError(f"{name}: cannot decode the image ({type(exc).__name__}: {exc})") from None
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: {w}x{h} pixels is too small to hold a face (need at least {MIN_SIDE} a side)")
    rgb = np.ascontiguousarray(rgb)
    info = ImageInfo(path=name, format=fmt, mode=mode, size=(w, h), exif_transposed=bool(exif_done), notes=notes)
    if info.exif_transposed:
        info.notes.append("applied EXIF orientation")
    return rgb, info


def encode_png(array: np.ndarray, compress_level: int = 3) -> bytes:
    """PNG bytes of (H, W), (H, W, 3) or (H, W, 4) uint8 or uint16, non-interlaced, every row
    with PNG's "Up" filter (the difference to the row above) and one zlib stream at
    ``compress_level``. For the smooth images written here (textures, normal maps) it packs as
    small as PIL's adaptive filters at the same level, in about two thirds of the time; zlib
    runs without the GIL, so several images encode in parallel threads."""
    import struct
    import zlib

    a = np.asarray(array)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected uint8/uint16 (H, W[, 3|4]) array, got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"cannot write an empty image ({w}x{h})")
    channels = 1 if a.ndim == 2 else a.shape[2]
    rows = np.ascontiguousarray(a, dtype=">u2" if a.dtype == np.uint16 else np.uint8).view(np.uint8).reshape(h, -1)
    lines = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    lines[0, 0] = 0  # the first row as it is
    lines[1:, 0] = 2  # the others: Up
    lines[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])  # modulo 256, as PNG's filter arithmetic

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", w, h, 16 if a.dtype == np.uint16 else 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(lines.tobytes(), compress_level)) + chunk(b"IEND", b""))


def save_png_atomic(path: str | os.PathLike[str], array: np.ndarray, compress_level: int = 3) -> Path:
    """Write (H, W), (H, W, 3) or (H, W, 4) uint8 (or uint16) as PNG (:func:`encode_png`) via a
    temporary file (``compress_level``: zlib's 0-9; 1 is three times faster than 6 for a 20 %
    larger file)."""
    return write_bytes_atomic(path, encode_png(array, compress_level))
