"""The crop convention shared by the synthetic data and the photo pipeline (no ``bpy``).

A face crop is a square, axis-aligned window of the image computed from the face's 68 iBUG
landmarks (pixels, x right, y down):

* ``w, h``: width and height of the landmarks' bounding box;
* side ``s = CROP_SCALE * max(w, h)``;
* centre: the bounding box centre, moved up (towards smaller y) by ``CROP_SHIFT_UP * s``.

The synthetic renderer places its camera so that the rendered face obeys this convention (with
random jitter in scale and position), and the pipeline crops detected faces the same way, so
the networks see at inference what they saw in training. See ``docs/reference/conventions.md``.
"""

from __future__ import annotations

import numpy as np

CROP_SCALE = 1.6
CROP_SHIFT_UP = 0.06


def crop_box_from_landmarks(points: np.ndarray) -> tuple[float, float, float]:
    """Square crop box from landmarks.

    Parameters
    ----------
    points : (68, 2) float
        iBUG-68 landmarks in pixels (x right, y down). Other point sets with the same extent
        (e.g. a face oval) also work.

    Returns
    -------
    (x0, y0, side) : floats, pixels. The crop covers ``[x0, x0 + side) x [y0, y0 + side)``.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 3:
        raise ValueError(f"points must be (N>=3, 2), got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("points contain NaN or inf")
    lo, hi = p.min(axis=0), p.max(axis=0)
    w, h = hi - lo
    side = CROP_SCALE * max(w, h)
    if side <= 0:
        raise ValueError("landmarks are degenerate (zero extent)")
    cx, cy = (lo + hi) / 2.0
    cy -= CROP_SHIFT_UP * side
    return float(cx - side / 2.0), float(cy - side / 2.0), float(side)


def square_window(img: np.ndarray, cx: float, cy: float, side: float, out: int) -> tuple[np.ndarray, float, float, float]:
    """Resample the square [cx - side/2, cx + side/2]^2 of ``img`` to (out, out), replicating
    the border outside the image. Returns (window, x0, y0, scale) with
    ``image_xy = window_xy / scale + (x0, y0)``."""
    import cv2

    x0, y0 = cx - side / 2.0, cy - side / 2.0
    s = out / side
    m = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    win = cv2.warpAffine(img, m, (out, out), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return win, x0, y0, s
