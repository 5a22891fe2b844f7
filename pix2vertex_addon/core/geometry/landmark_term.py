"""Landmark reprojection term of the registration (numpy/scipy, no bpy).

Detected 2D points ``u_k`` (crop pixels) and the template surface points ``p_k = B_k v`` they
belong to (``core/landmarks.py``: triangle + barycentrics, so ``B`` is a sparse (K, V) matrix)
give the energy::

    E_lm(v) = sum_k w_k |pi(B_k v) - u_k|^2,   pi(p) = f (p_x, p_y) / (p_z + z_ref) + R / 2

in the crop's pinhole camera (``camera.CropCamera``: label frame, mm). The registration
minimises quadratics, so the term enters each outer iteration linearised at the current
vertices (Gauss-Newton): ``w_k |J_k (p_k - p0_k) + r0_k|^2`` with ``J_k`` the 2x3 Jacobian of
``pi`` and ``r0_k`` the current residual; its gradient at ``p0`` is the true gradient
(``tests/test_landmarks.py`` checks both against finite differences). Per iteration the
weights are also robust (Huber: ``w_k * min(1, huber_px / |r0_k|)``) and gated by visibility:
points whose template normal turns more than ``acos(min_cos)`` from the direction to the camera
are dropped (the far side of a turned face, where the detector's points slide to the outline).

Optionally (``depth_mm``) the detector's own relative depth of each point, brought to the label
frame by a scale and shift fitted per face (:func:`fit_scale_shift`, against the predicted
geometry under the points), gives a second, linear term ``sum_k w_k (z(B_k v) - d_k)^2`` (mm^2),
with Huber weights on its residual and the same visibility gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["LandmarkTerm", "fit_scale_shift", "project", "projection_jacobian"]


def project(p: np.ndarray, focal: float, z_ref: float, resolution: int) -> np.ndarray:
    """(K, 3) label-frame points (mm) -> (K, 2) crop pixels."""
    z = np.maximum(p[:, 2] + z_ref, 1e-6)
    return focal * p[:, :2] / z[:, None] + resolution / 2.0


def projection_jacobian(p: np.ndarray, focal: float, z_ref: float) -> np.ndarray:
    """(K, 2, 3) Jacobian of :func:`project` at ``p``."""
    z = np.maximum(p[:, 2] + z_ref, 1e-6)
    j = np.zeros((len(p), 2, 3))
    j[:, 0, 0] = j[:, 1, 1] = focal / z
    j[:, 0, 2] = -focal * p[:, 0] / z ** 2
    j[:, 1, 2] = -focal * p[:, 1] / z ** 2
    return j


def fit_scale_shift(x: np.ndarray, y: np.ndarray, weights: np.ndarray, huber: float,
                    iterations: int = 10) -> tuple[float, float] | None:
    """Robust ``(s, t)`` with ``s x + t ~ y`` (weighted least squares, Huber IRLS on the
    residual, ``huber`` in the units of ``y``); None with fewer than 10 usable pairs or a
    scale <= 0 (the depths disagree in sign: the detector's depth is unusable)."""
    x, y, w0 = (np.asarray(a, dtype=np.float64) for a in (x, y, weights))
    ok = np.isfinite(x) & np.isfinite(y) & (w0 > 0)
    if ok.sum() < 10:
        return None
    x, y, w0 = x[ok], y[ok], w0[ok]
    w = w0.copy()
    s = t = 0.0
    for _ in range(iterations):
        a = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(w)[:, None]
        (s, t), *_ = np.linalg.lstsq(a, y * np.sqrt(w), rcond=None)
        r = np.abs(s * x + t - y)
        w = w0 * np.minimum(1.0, huber / np.maximum(r, 1e-12))
    return (float(s), float(t)) if s > 0 else None


@dataclass(frozen=True)
class LandmarkTerm:
    """Detected points and where they lie on the template.

    B : (K, V) sparse barycentric matrix (``landmarks.landmark_matrix``).
    target_px : (K, 2) detected points, crop pixels.  weights : (K,) reliabilities (>= 0).
    focal, z_ref, resolution : the crop's camera (``CropCamera``).
    depth_mm : (K,) or None, the detector's depth of each point in the label frame (mm, NaN:
        unknown), for the optional depth term.
    contour : (K,) bool or None, the points on the face's outline (MediaPipe's face oval),
        whose weights ``RegistrationParams.landmark_contour_scale`` scales.
    """

    B: sp.csr_matrix
    target_px: np.ndarray
    weights: np.ndarray
    focal: float
    z_ref: float
    resolution: int
    depth_mm: np.ndarray | None = None
    contour: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = self.B.shape[0]
        if self.target_px.shape != (k, 2) or self.weights.shape != (k,):
            raise ValueError(f"landmark term: B has {k} rows, target_px {self.target_px.shape}, "
                             f"weights {self.weights.shape}")
        if not (self.focal > 0 and np.isfinite(self.target_px).all() and (self.weights >= 0).all()):
            raise ValueError("landmark term: focal must be positive, points finite, weights >= 0")
        for name in ("depth_mm", "contour"):
            a = getattr(self, name)
            if a is not None and a.shape != (k,):
                raise ValueError(f"landmark term: {name} must be ({k},), got {a.shape}")

    def residuals(self, v: np.ndarray) -> np.ndarray:
        """(K, 2) ``pi(B v) - u`` in crop pixels."""
        return project(self.B @ v, self.focal, self.z_ref, self.resolution) - self.target_px

    def energy(self, v: np.ndarray, weights: np.ndarray | None = None) -> float:
        w = self.weights if weights is None else weights
        return float((w * (self.residuals(v) ** 2).sum(axis=1)).sum())

    def gradient(self, v: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(V, 3) gradient of :meth:`energy`."""
        w = self.weights if weights is None else weights
        p = self.B @ v
        r = project(p, self.focal, self.z_ref, self.resolution) - self.target_px
        j = projection_jacobian(p, self.focal, self.z_ref)
        return np.asarray(self.B.T @ (2.0 * w[:, None] * np.einsum("kij,ki->kj", j, r)))

    def visible(self, v: np.ndarray, normals: np.ndarray, min_cos: float) -> np.ndarray:
        """(K,) bool: points whose surface normal (``normals`` (V, 3), pointing out of the face)
        is within ``acos(min_cos)`` of the direction to the camera."""
        p = self.B @ v
        n = self.B @ normals
        to_cam = -(p + np.array([0.0, 0.0, self.z_ref]))
        cos = np.einsum("ij,ij->i", n, to_cam) / (np.linalg.norm(n, axis=1) * np.linalg.norm(to_cam, axis=1) + 1e-12)
        return cos >= min_cos

    def robust_weights(self, v: np.ndarray, normals: np.ndarray, huber_px: float, min_cos: float,
                       visible: np.ndarray | None = None) -> np.ndarray:
        """(K,) the weights of one iteration: Huber on the residual, visibility gate on the
        surface normals ``normals`` (V, 3, pointing out of the face; or ``visible`` given)."""
        r = np.linalg.norm(self.residuals(v), axis=1)
        w = self.weights * np.minimum(1.0, huber_px / np.maximum(r, 1e-12))
        vis = self.visible(v, normals, min_cos) if visible is None else visible
        return np.where(vis, w, 0.0)

    # -- the optional depth term ------------------------------------------------------------

    def depth_residuals(self, v: np.ndarray) -> np.ndarray:
        """(K,) ``z(B v) - depth_mm`` (NaN where the depth is unknown)."""
        if self.depth_mm is None:
            raise ValueError("landmark term: no depth")
        return (self.B @ v)[:, 2] - self.depth_mm

    def depth_energy(self, v: np.ndarray, weights: np.ndarray) -> float:
        r = np.nan_to_num(self.depth_residuals(v))
        return float((weights * r ** 2).sum())

    def depth_gradient(self, v: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(V, 3) gradient of :meth:`depth_energy`."""
        g = np.zeros((len(weights), 3))
        g[:, 2] = 2.0 * weights * np.nan_to_num(self.depth_residuals(v))
        return np.asarray(self.B.T @ g)

    def depth_weights(self, v: np.ndarray, visible: np.ndarray, huber_mm: float) -> np.ndarray:
        """(K,) the depth term's weights of one iteration: reliability, Huber on the residual,
        visibility gate; 0 where the depth is unknown."""
        r = np.abs(self.depth_residuals(v))
        w = self.weights * np.minimum(1.0, huber_mm / np.maximum(np.nan_to_num(r, nan=np.inf), 1e-12))
        return np.where(visible & np.isfinite(r), w, 0.0)

    def linearize_depth(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The depth term as ``(M, g)`` of :meth:`linearize`'s form (exact: it is quadratic)."""
        m = np.zeros((len(weights), 3, 3))
        m[:, 2, 2] = weights
        g = np.zeros((len(weights), 3))
        if self.depth_mm is not None:
            g[:, 2] = weights * np.nan_to_num(self.depth_mm)
        return m, g

    def linearize(self, v: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gauss-Newton quadratic ``sum_k (p_k^T M_k p_k - 2 g_k . p_k) + const`` at ``v``:
        ``M`` (K, 3, 3) = w J^T J and ``g`` (K, 3) = w J^T (J p0 - r0), ``p = B v``."""
        p0 = self.B @ v
        r0 = project(p0, self.focal, self.z_ref, self.resolution) - self.target_px
        j = projection_jacobian(p0, self.focal, self.z_ref)
        m = weights[:, None, None] * np.einsum("kai,kaj->kij", j, j)
        g = weights[:, None] * np.einsum("kai,ka->ki", j, np.einsum("kai,ki->ka", j, p0) - r0)
        return m, g
