"""MediaPipe's 478 face-mesh points on the template surface (no ``bpy``).

The map (``mp478_map.npz`` next to this module, derived by ``scripts/derive_landmark_map.py``
from synthetic renders whose true template point under every pixel is known) gives, per
MediaPipe point, a template triangle (a row of ``Template.triangles()``), barycentric
coordinates on it and a reliability weight in [0, 1]: points whose surface position scatters
across identities or slides with the head pose (the face contour, the irises) weigh little or
nothing. docs/reference/landmarks.md describes the derivation and its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["MAP_PATH", "N_MP", "LandmarkMap", "load_landmark_map", "landmark_matrix", "crop_points"]

N_MP = 478
MAP_PATH = Path(__file__).with_name("mp478_map.npz")


@dataclass(frozen=True)
class LandmarkMap:
    """Per MediaPipe point: ``triangle`` (478,) int64 (-1: not on the template), ``bary``
    (478, 3) float64, ``weight`` (478,) float64 reliability, ``spread_mm`` (478,) scatter over
    identities (frontal views), ``slide_mm`` (478,) how far the point moves on the surface when
    the head turns by 30 degrees."""

    triangle: np.ndarray
    bary: np.ndarray
    weight: np.ndarray
    spread_mm: np.ndarray
    slide_mm: np.ndarray

    def validate(self, n_triangles: int) -> None:
        if self.triangle.shape != (N_MP,) or self.bary.shape != (N_MP, 3) or self.weight.shape != (N_MP,):
            raise ValueError("the landmark map must have 478 rows")
        if self.triangle.max() >= n_triangles:
            raise ValueError(f"the landmark map names triangle {self.triangle.max()}, the template has {n_triangles}")

    @property
    def usable(self) -> np.ndarray:
        """(478,) bool: points on the template with a positive weight."""
        return (self.triangle >= 0) & (self.weight > 0)

    def points(self, vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """(478, 3) surface points of ``vertices`` (NaN where unmapped)."""
        v = np.asarray(vertices, dtype=np.float64)
        out = np.full((N_MP, 3), np.nan)
        ok = self.triangle >= 0
        corners = v[np.asarray(triangles)[self.triangle[ok]]]  # (n, 3, 3)
        out[ok] = np.einsum("nk,nkd->nd", self.bary[ok], corners)
        return out

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, triangle=self.triangle.astype(np.int32), bary=self.bary.astype(np.float32),
                            weight=self.weight.astype(np.float32), spread_mm=self.spread_mm.astype(np.float32),
                            slide_mm=self.slide_mm.astype(np.float32))


@lru_cache(maxsize=4)
def load_landmark_map(path: str | None = None) -> LandmarkMap:
    """The shipped map (or the one at ``path``)."""
    p = Path(path) if path else MAP_PATH
    try:
        with np.load(p) as z:
            m = LandmarkMap(triangle=z["triangle"].astype(np.int64), bary=z["bary"].astype(np.float64),
                            weight=z["weight"].astype(np.float64), spread_mm=z["spread_mm"].astype(np.float64),
                            slide_mm=z["slide_mm"].astype(np.float64))
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"cannot read the landmark map {p}: {exc}") from exc
    for a in (m.triangle, m.bary, m.weight, m.spread_mm, m.slide_mm):
        a.setflags(write=False)
    return m


def landmark_matrix(lmap: LandmarkMap, triangles: np.ndarray, n_vertices: int,
                    rows: np.ndarray | None = None) -> sp.csr_matrix:
    """(K, V) sparse barycentric matrix ``B`` with ``B @ vertices`` = the surface points of the
    map's points ``rows`` (default: every usable point)."""
    idx = np.flatnonzero(lmap.usable) if rows is None else np.asarray(rows, dtype=np.int64)
    tri = np.asarray(triangles)[lmap.triangle[idx]]
    r = np.repeat(np.arange(len(idx)), 3)
    return sp.csr_matrix((lmap.bary[idx].ravel(), (r, tri.ravel())), shape=(len(idx), n_vertices))


def crop_points(points_image: np.ndarray, box: tuple[float, float, float], resolution: int) -> np.ndarray:
    """Photo pixels (N, 2) -> continuous crop pixels of the crop ``box`` (x0, y0, side)."""
    x0, y0, side = box
    return (np.asarray(points_image, dtype=np.float64) - (x0, y0)) * (resolution / side)
