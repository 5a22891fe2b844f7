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

__all__ = ["FACE_OVAL", "MAP_PATH", "N_MP", "LandmarkMap", "affine_pairs", "fitted_landmarks_68", "crop_points", "landmark_matrix", "landmark_term",
           "lift_to_maps", "load_landmark_map", "outline_depth", "outline_scan",
           "photo_landmarks_68", "visible_jaw"]

N_MP = 478
# MediaPipe's face oval (``FACEMESH_FACE_OVAL``), in order around the face from the forehead's top
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
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


def lift_to_maps(points_crop: np.ndarray, xyz: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(K, 3) the predicted label-frame point under each crop pixel position (nearest pixel;
    NaN off the mask or the crop)."""
    r = xyz.shape[0]
    ij = np.floor(np.asarray(points_crop)).astype(np.int64)
    inside = (ij >= 0).all(axis=1) & (ij < r).all(axis=1)
    out = np.full((len(ij), 3), np.nan)
    ii = np.clip(ij, 0, r - 1)
    ok = inside & np.asarray(mask)[ii[:, 1], ii[:, 0]]
    out[ok] = np.asarray(xyz, dtype=np.float64)[ii[ok, 1], ii[ok, 0]]
    return out


DEPTH_FIT_HUBER_MM = 2.0  # Huber threshold of the per-face scale-and-shift fit of the detector's depth


def landmark_term(points_478: np.ndarray, box: tuple[float, float, float], resolution: int, focal: float,
                  z_ref: float, triangles: np.ndarray, n_vertices: int, lmap: LandmarkMap | None = None,
                  depth_478: np.ndarray | None = None, xyz: np.ndarray | None = None,
                  mask: np.ndarray | None = None):
    """The registration's :class:`LandmarkTerm` from a detection's 478 photo-pixel points and
    its crop camera, or None when the points are not MediaPipe's 478. With the detector's
    relative depth ``depth_478`` (photo pixels) and the predicted maps ``xyz``/``mask``, the
    term also carries ``depth_mm``: that depth with a scale and shift fitted robustly to the
    predicted geometry under the points (None where the fit fails)."""
    from .geometry.landmark_term import LandmarkTerm, fit_scale_shift

    pts = np.asarray(points_478, dtype=np.float64)
    if pts.shape != (N_MP, 2) or not np.isfinite(pts).all():
        return None
    m = lmap or load_landmark_map()
    rows = np.flatnonzero(m.usable)
    target = crop_points(pts[rows], box, resolution)
    depth_mm = None
    if depth_478 is not None and xyz is not None and mask is not None and np.shape(depth_478) == (N_MP,):
        d = np.asarray(depth_478, dtype=np.float64)[rows] * (resolution / box[2])
        st = fit_scale_shift(d, lift_to_maps(target, xyz, mask)[:, 2], m.weight[rows], DEPTH_FIT_HUBER_MM)
        if st is not None:
            depth_mm = st[0] * d + st[1]
    return LandmarkTerm(B=landmark_matrix(m, triangles, n_vertices, rows), target_px=target,
                        weights=m.weight[rows].copy(), focal=float(focal), z_ref=float(z_ref),
                        resolution=int(resolution), depth_mm=depth_mm, contour=np.isin(rows, FACE_OVAL))


def affine_pairs(term, template_mm: np.ndarray, xyz: np.ndarray, mask: np.ndarray,
                 weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Landmark pairs for ``fit_affine_ransac(extra=...)``: template points, the predicted
    geometry under the detected points, reliability x ``weight`` (None when none is usable)."""
    y = lift_to_maps(term.target_px, xyz, mask)
    ok = np.isfinite(y[:, 0]) & (term.weights > 0)
    if weight <= 0 or not ok.any():
        return None
    x = term.B @ np.asarray(template_mm, dtype=np.float64)
    return x[ok], y[ok], term.weights[ok] * weight


# -- iBUG-68 points of a fitted mesh, the jaw on its occluding contour ---------------------------

JAW_SCAN = (0.6, 1.15)  # a jaw point's scan: from the inner points' centroid c towards the fixed
# point g, c + t (g - c) for t in this range
JAW_SCAN_HIDDEN = 4.0  # ... up to this t when g is hidden (behind the rendered surface)
JAW_HIDDEN_MM = 3.0  # g is hidden when it lies this much behind the rendered depth at its pixel
JAW_SCAN_PX = 0.5  # scan step, render pixels
JAW_BEHIND_MM = 40.0  # a depth step this large along a scan leaves the face (onto the neck)
JAW_MASK_EDGE = 0.5  # with the networks' mask: a jaw point where it is below this (hair, an ear)
# moves inwards to where it reaches it (the visible outline), not nearer the centre than JAW_SCAN[0]



def outline_depth(vertices: np.ndarray, triangles: np.ndarray, focal: float, z_ref: float, resolution: int,
                  up: int = 2, cull_backfaces: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(depth, covered) of a mesh (label frame, mm) rendered in the crop camera at ``up`` times
    its resolution: camera-frame depth (inf off the mesh) and the covered pixels with holes
    (eyes, mouth) filled, the input of :func:`outline_scan`."""
    from scipy import ndimage

    from .raster_np import rasterize_np

    cam = np.asarray(vertices, dtype=np.float64) + np.array([0.0, 0.0, z_ref])
    depth = np.asarray(rasterize_np(cam, np.asarray(triangles), focal * up, int(resolution) * up,
                                    cull_backfaces=cull_backfaces)[2], dtype=np.float64)
    return depth, ndimage.binary_fill_holes(np.isfinite(depth))


def outline_scan(depth: np.ndarray, covered: np.ndarray, c: np.ndarray, g: np.ndarray,
                 t_range: tuple[float, float]) -> float | None:
    """Where the image line ``c + t (g - c)`` (pixels of ``depth``), scanned over ``t_range``,
    leaves the mesh: the outermost sample on it when its outer silhouette ends inside the scan
    or the depth steps back by more than ``JAW_BEHIND_MM`` (onto the neck or the side of the
    head behind the jaw); holes such as the mouth count as on the mesh. None when the scan
    never meets the mesh or the mesh goes on past it."""
    res = depth.shape[0]
    d = np.asarray(g, dtype=np.float64) - c
    length = float(np.linalg.norm(d))
    if length < 2.0:
        return None
    t = np.arange(t_range[0] * length, t_range[1] * length, JAW_SCAN_PX) / length
    pts = c + t[:, None] * d
    ij = np.floor(pts).astype(np.int64)
    inside = (ij >= 0).all(axis=1) & (ij < res).all(axis=1)
    z = np.full(len(pts), np.inf)
    z[inside] = depth[ij[inside, 1], ij[inside, 0]]
    on = np.zeros(len(pts), dtype=bool)
    on[inside] = covered[ij[inside, 1], ij[inside, 0]]
    first = np.flatnonzero(on)
    if not len(first):
        return None
    k0 = int(first[0])
    with np.errstate(invalid="ignore"):
        behind = np.isfinite(z[k0 + 1:]) & np.isfinite(z[k0:-1]) & (z[k0 + 1:] - z[k0:-1] > JAW_BEHIND_MM)
    hit = np.flatnonzero(~on[k0 + 1:] | behind)
    return float(t[k0 + int(hit[0])]) if len(hit) else None


def fitted_landmarks_68(vertices: np.ndarray, triangles: np.ndarray, landmarks_68: np.ndarray, focal: float,
                        z_ref: float, resolution: int, contour: bool = True,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """(68, 2) crop pixels of the iBUG-68 points of a mesh (label frame, mm) in the crop camera:
    the template's landmark vertices projected, except (``contour``) the 17 jaw points, which lie
    on the mesh's visible outline, as iBUG annotates them. The mesh is rendered (depth, twice the
    crop's resolution); jaw point j is scanned along the image line from the 51 inner points'
    centroid c through its fixed point's projection g, over ``c + t (g - c)`` for t in
    ``JAW_SCAN`` (to ``JAW_SCAN_HIDDEN`` when g is hidden behind the rendered surface, as on a
    turned face's far side), and is where :func:`outline_scan` leaves the mesh. Where the mesh
    goes on past the scan (a visible point with the face going on towards the ear) the fixed
    point is kept."""
    from .geometry.landmark_term import project

    v = np.asarray(vertices, dtype=np.float64)
    out = project(v[np.asarray(landmarks_68)], focal, z_ref, resolution)
    if not contour:
        return out
    up = 2
    res = int(resolution) * up
    depth, covered = outline_depth(v, triangles, focal, z_ref, resolution, up)
    c = out[17:].mean(axis=0) * up
    lm_z = v[np.asarray(landmarks_68)[:17], 2] + z_ref
    for j in range(17):
        g = out[j] * up
        gi = np.clip(np.floor(g).astype(np.int64), 0, res - 1)
        hidden = lm_z[j] > depth[gi[1], gi[0]] + JAW_HIDDEN_MM
        t = outline_scan(depth, covered, c, g, (JAW_SCAN[0], JAW_SCAN_HIDDEN if hidden else JAW_SCAN[1]))
        if t is not None:
            out[j] = (c + t * (g - c)) / up
    if mask is not None:
        out[:17] = visible_jaw(out[:17], out[17:].mean(axis=0), mask, resolution)
    return out


def visible_jaw(points: np.ndarray, centre: np.ndarray, mask: np.ndarray, resolution: int,
                edge: float = JAW_MASK_EDGE) -> np.ndarray:
    """Jaw points (J, 2) in crop pixels moved onto the visible face: where the networks' face
    mask (R, R probabilities over the crop) is below ``edge`` at a point (hair over the temple,
    an ear, a hand), the point moves along its line towards ``centre`` to the first sample where
    the mask reaches ``edge``, at most to ``JAW_SCAN[0]`` of the distance (else it stays)."""
    m = np.asarray(mask, dtype=np.float32)
    scale = m.shape[0] / float(resolution)

    def at(q: np.ndarray) -> np.ndarray:
        x = np.clip(q[:, 0] * scale - 0.5, 0, m.shape[1] - 1)
        y = np.clip(q[:, 1] * scale - 0.5, 0, m.shape[0] - 1)
        x0 = np.minimum(x.astype(np.int64), m.shape[1] - 2)
        y0 = np.minimum(y.astype(np.int64), m.shape[0] - 2)
        fx, fy = x - x0, y - y0
        return ((m[y0, x0] * (1 - fx) + m[y0, x0 + 1] * fx) * (1 - fy)
                + (m[y0 + 1, x0] * (1 - fx) + m[y0 + 1, x0 + 1] * fx) * fy)

    out = np.array(points, dtype=np.float64)
    c = np.asarray(centre, dtype=np.float64)
    for j in np.flatnonzero(at(out) < edge):
        d = out[j] - c
        n = int(np.ceil(np.linalg.norm(d) * (1.0 - JAW_SCAN[0]) / JAW_SCAN_PX)) + 1
        line = c + np.linspace(1.0, JAW_SCAN[0], n)[:, None] * d
        ok = np.flatnonzero(at(line) >= edge)
        if ok.size:
            out[j] = line[ok[0]]
    return out


def photo_landmarks_68(camera, vertices: np.ndarray, template, contour: bool = True,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """(68, 2) photo pixels of a registered template's iBUG-68 points (``camera``: the crop's
    ``CropCamera``; ``template``: the face model's ``Template``), jaw on the occluding contour
    (and, given the networks' ``mask``, on the visible face: :func:`visible_jaw`)."""
    crop = fitted_landmarks_68(vertices, template.triangles(), template.landmarks_68, camera.focal, camera.z_ref,
                               camera.resolution, contour=contour, mask=mask)
    return crop * camera.image_scale + np.asarray(camera.box[:2])
