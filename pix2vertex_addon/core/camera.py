"""Camera recovery from the network's maps, and head pose normalisation (no ``bpy``).

The networks predict, per crop pixel, the label-frame position ``xyz`` (mm; docs/reference/conventions.md):
camera frame shifted by ``z_ref`` along the optical axis. A pixel centre ``(u, v)`` of an ``R``-px
crop therefore obeys ``u - R/2 = f x / (z + z_ref)`` (same for v, y), which is linear in the two
unknowns ``f`` (focal length, crop pixels) and ``z_ref`` (mm): :func:`fit_pinhole` solves it in
the least-squares sense over the face pixels. With them, any label-frame point projects into the
crop and, through the crop box, into the photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CropCamera", "fit_pinhole", "rigid_fit"]


@dataclass(frozen=True)
class CropCamera:
    """Pinhole camera of one crop, and where the crop lies in the photo.

    focal : float, crop pixels.  z_ref : float, mm (label frame = camera frame - (0, 0, z_ref)).
    resolution : int, crop side R in pixels.  box : (x0, y0, side) of the crop in photo pixels.
    """

    focal: float
    z_ref: float
    resolution: int
    box: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_camera(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) label frame (mm) -> camera frame (mm)."""
        p = np.asarray(xyz, dtype=np.float64).copy()
        p[:, 2] += self.z_ref
        return p

    def project_crop(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) label frame (mm) -> (N, 2) continuous crop pixels (x right, y down)."""
        p = np.asarray(xyz, dtype=np.float64)
        c = self.resolution / 2.0
        z = np.maximum(p[:, 2] + self.z_ref, 1e-6)
        out = np.empty((len(p), 2))
        for k in (0, 1):  # column by column, without (N, 3) or (N, 2) temporaries
            col = np.multiply(p[:, k], self.focal, out=out[:, k])
            col /= z
            col += c
        return out

    @property
    def image_scale(self) -> float:
        """Photo pixels per crop pixel."""
        return self.box[2] / self.resolution

    def project_image(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) label frame (mm) -> (N, 2) continuous photo pixels (x right, y down)."""
        return self.project_crop(xyz) * self.image_scale + np.array(self.box[:2])


DEFAULT_Z_REF_MM = 600.0  # camera to head centre when the maps cannot tell (weak perspective)
MAX_Z_REF_MM = 5000.0


def fit_pinhole(xyz: np.ndarray, mask: np.ndarray, min_z_ref: float = 150.0,
                extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                extra_share: float = 0.0) -> tuple[float, float, float]:
    """Least-squares focal length and ``z_ref`` from a crop's maps.

    The full perspective fit is used when it is well posed (positive focal length, the camera
    between ``min_z_ref`` and 5 m from the head centre); otherwise (predicted maps whose
    perspective cue is too weak or inconsistent) a weak-perspective fit: the scale
    ``f / z_ref`` from the image, ``z_ref`` = 600 mm.

    Parameters
    ----------
    xyz : (R, R, 3) float, label frame, mm.
    mask : (R, R) bool, pixels to use.

    extra : (points (K, 3) label frame mm, pixels (K, 2) crop pixels, weights (K,)) more pairs of
        a point and the pixel it must project to (the landmarks, weighted by reliability); together
        they weigh ``extra_share`` of all the mask's pixels. The rms stays that of the pixels.

    Returns
    -------
    (focal in crop pixels, z_ref in mm, rms reprojection error in crop pixels)
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or mask.shape != xyz.shape[:2] or xyz.shape[0] != xyz.shape[1]:
        raise ValueError(f"xyz must be (R, R, 3) with a matching (R, R) mask, got {xyz.shape} {mask.shape}")
    rows, cols = np.nonzero(mask & np.isfinite(xyz).all(axis=2))
    if rows.size < 10:
        raise ValueError("too few face pixels to recover the camera")
    r = xyz.shape[0]
    du = cols + 0.5 - r / 2.0
    dv = rows + 0.5 - r / 2.0
    p = xyz[rows, cols]
    w = np.ones(len(p))
    n_pix = len(p)
    if extra is not None and extra_share > 0 and len(extra[0]):
        ep, eu = np.asarray(extra[0], dtype=np.float64), np.asarray(extra[1], dtype=np.float64)
        ew = np.asarray(extra[2], dtype=np.float64)
        ok = np.isfinite(ep).all(axis=1) & np.isfinite(eu).all(axis=1) & (ew > 0)
        if ok.any():
            p = np.concatenate([p, ep[ok]])
            du = np.concatenate([du, eu[ok, 0] - r / 2.0])
            dv = np.concatenate([dv, eu[ok, 1] - r / 2.0])
            w = np.concatenate([w, ew[ok] * (extra_share * n_pix / ew[ok].sum())])
    sw = np.sqrt(np.concatenate([w, w]))

    def rms_of(f: float, zr: float) -> float:
        q = p[:n_pix]
        zz = np.maximum(q[:, 2] + zr, 1e-6)
        res = np.concatenate([f * q[:, 0] / zz - du[:n_pix], f * q[:, 1] / zz - dv[:n_pix]])
        return float(np.sqrt(np.mean(res**2)))

    # weak perspective: (du, dv) = s (x, y)
    xy = np.concatenate([p[:, 0], p[:, 1]])
    d = np.concatenate([du, dv])
    ww = sw**2
    s_weak = float((ww * xy) @ d / max((ww * xy) @ xy, 1e-12))
    if s_weak <= 0:
        raise ValueError("the maps do not describe a face seen by a camera (mirrored geometry)")
    weak = (s_weak * DEFAULT_Z_REF_MM, DEFAULT_Z_REF_MM)

    # full perspective: du (z + zr) = f x  ->  [x, -du] @ [f, zr] = du z  (same for v, y)
    a = np.concatenate([np.stack([p[:, 0], -du], 1), np.stack([p[:, 1], -dv], 1)])
    b = np.concatenate([du * p[:, 2], dv * p[:, 2]])
    (f, zr), *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
    lo = max(min_z_ref, min_z_ref - p[:, 2].min())
    if f > 0 and lo <= zr <= MAX_Z_REF_MM:
        zz = p[:, 2] + zr  # refit f with z_ref fixed
        if len(p) == n_pix:  # no extra pairs
            f = (np.sum(du * p[:, 0] / zz) + np.sum(dv * p[:, 1] / zz)) / (np.sum((p[:, 0] / zz) ** 2) + np.sum((p[:, 1] / zz) ** 2))
        else:
            qx, qy = p[:, 0] / zz, p[:, 1] / zz
            f = (np.sum(w * du * qx) + np.sum(w * dv * qy)) / (np.sum(w * qx**2) + np.sum(w * qy**2))
        if rms_of(f, zr) <= rms_of(*weak):
            return float(f), float(zr), rms_of(f, zr)
    return weak[0], weak[1], rms_of(*weak)


def rigid_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` and translation ``t`` minimising ``sum w |R src + t - dst|^2`` (Kabsch).

    src, dst : (N, 3) float.  Returns R (3, 3) with det +1, t (3,).
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 3:
        raise ValueError(f"src and dst must both be (N, 3), got {s.shape} {d.shape}")
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    cs, cd = w @ s, w @ d
    h = ((s - cs) * w[:, None]).T @ (d - cd)
    u, _, vt = np.linalg.svd(h)
    sign = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rot = vt.T @ np.diag([1.0, 1.0, sign]) @ u.T
    return rot, cd - rot @ cs
