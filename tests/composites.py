"""Occluders composited onto real photos (test and figure inputs): a hair fringe over the
forehead and a pair of glasses, placed from the photo's 68 landmarks (iBUG order)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def hair_fringe(rgb: np.ndarray, lm68: np.ndarray, seed: int = 0) -> np.ndarray:
    """A dark, streaked fringe from above the head down to the eyebrows."""
    h, w = rgb.shape[:2]
    lm = np.asarray(lm68, dtype=np.float64)
    x0, x1 = lm[:, 0].min(), lm[:, 0].max()
    width = x1 - x0
    brow = lm[17:27, 1].min()
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    edge = brow - 0.02 * width + 0.04 * width * np.sin(xx / (0.05 * width))
    top = brow - 1.2 * width
    inside = (yy < edge) & (yy > top) & (xx > x0 - 0.15 * width) & (xx < x1 + 0.15 * width)
    rng = np.random.default_rng(seed)
    strand = 0.55 + 0.45 * np.sin(xx * (9.0 / width * 3.0) + rng.normal(0, 0.4, (h, w)))
    alpha = np.asarray(Image.fromarray((inside * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(max(1.0, width / 150))), dtype=np.float64)[..., None] / 255.0
    hair = np.array([55.0, 38.0, 26.0]) * strand[..., None]
    out = rgb.astype(np.float64) * (1 - alpha) + hair * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def glasses(rgb: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    """Thick dark frames around both eyes with a bridge, arms and lightly tinted lenses."""
    lm = np.asarray(lm68, dtype=np.float64)
    width = lm[:, 0].max() - lm[:, 0].min()
    img = Image.fromarray(rgb).convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    line = max(2, int(width * 0.035))
    boxes = []
    for eye in (lm[36:42], lm[42:48]):
        c = eye.mean(axis=0)
        rx, ry = 0.19 * width, 0.12 * width
        box = [c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry]
        boxes.append(box)
        d.rounded_rectangle(box, radius=int(ry * 0.8), fill=(150, 170, 190, 40), outline=(20, 20, 25, 255),
                            width=line)
    (l0, t0, r0, b0), (l1, t1, r1, b1) = boxes
    ym = (t0 + b0) / 2 - 0.03 * width
    d.line([(r0, ym), (l1, ym)], fill=(20, 20, 25, 255), width=line)
    d.line([(l0, ym), (lm[0, 0], lm[0, 1])], fill=(20, 20, 25, 255), width=line)
    d.line([(r1, ym), (lm[16, 0], lm[16, 1])], fill=(20, 20, 25, 255), width=line)
    return np.asarray(Image.alpha_composite(img, layer).convert("RGB"))
