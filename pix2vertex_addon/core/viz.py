"""Small image helpers for maps, reports and contact sheets (numpy + Pillow; no matplotlib, no bpy)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# anchors of a perceptual (viridis-like) colour map, 0 -> 1
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)


def colormap(v: np.ndarray, lo: float, hi: float, mask: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 colours; pixels outside ``mask`` are black."""
    t = np.clip((np.asarray(v, np.float32) - lo) / max(hi - lo, 1e-9), 0, 1) * (len(_ANCHORS) - 1)
    i = np.minimum(t.astype(int), len(_ANCHORS) - 2)
    f = (t - i)[..., None]
    rgb = _ANCHORS[i] * (1 - f) + _ANCHORS[i + 1] * f
    if mask is not None:
        rgb = rgb * np.asarray(mask, bool)[..., None]
    return rgb.astype(np.uint8)


def normals_rgb(xyz: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(R, R, 3) xyz (label frame) -> (R, R, 3) uint8 normal map (camera-facing normals, the usual
    (n+1)/2 colouring with x right, y up, z towards the viewer)."""
    p = np.asarray(xyz, np.float64)
    dcol = np.zeros_like(p)
    drow = np.zeros_like(p)
    dcol[:, :-1] = p[:, 1:] - p[:, :-1]
    drow[:-1] = p[1:] - p[:-1]
    n = np.cross(drow, dcol)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    n = n * np.array([1.0, -1.0, -1.0])  # to x right, y up, z towards the viewer
    m = np.asarray(mask, bool).copy()
    m[-1, :] = m[:, -1] = False
    m[:-1] &= np.asarray(mask, bool)[1:]
    m[:, :-1] &= np.asarray(mask, bool)[:, 1:]
    return (((n + 1) / 2 * 255) * m[..., None]).astype(np.uint8)


def tile(rows: list[list[np.ndarray]], labels: list[str] | None = None, cell: int = 160) -> Image.Image:
    """Grid of (H, W, 3) uint8 images, each resized to cell x cell, with optional column labels."""
    top = 14 if labels else 0
    ncol = max(len(r) for r in rows)
    sheet = Image.new("RGB", (ncol * cell, top + len(rows) * cell), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    if labels:
        for j, s in enumerate(labels):
            d.text((j * cell + 3, 1), s, fill=(0, 0, 0))
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            sheet.paste(Image.fromarray(im).resize((cell, cell), Image.Resampling.NEAREST), (j * cell, top + i * cell))
    return sheet
