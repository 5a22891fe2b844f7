"""Target mesh from the network's maps (numpy/scipy, no bpy).

One vertex per valid pixel (label frame, millimetres, see docs/reference/conventions.md), two triangles per
2x2 pixel block whose four pixels are valid, none across depth discontinuities (a triangle with
an edge longer than ``max_edge_mm`` is dropped). Triangles are wound so that their normals point
towards the camera (-z in the label frame). Each vertex keeps its correspondence value and its
pixel position. The target is never modified by the later stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .laplacian import vertex_normals

__all__ = ["TargetMesh", "build_target_mesh", "image_intensity"]


@dataclass(frozen=True)
class TargetMesh:
    """Triangle mesh of the visible face, built from per-pixel maps.

    Attributes
    ----------
    vertices : (n, 3) float64
        Label-frame positions, mm.
    faces : (m, 3) int64
        Triangles (normals towards the camera).
    normals : (n, 3) float64
        Unit vertex normals (towards the camera): area-weighted, then averaged
        ``normal_smooth_iters`` times over the mesh's 1-ring (never across a discontinuity);
        (0, 0, 0) for a vertex in no triangle.
    corr : (n, 3) float64
        Canonical correspondence in [0, 1] of each vertex.
    pixels : (n, 2) int64
        (row, col) of each vertex's pixel.
    resolution : (int, int)
        (rows, cols) of the maps.
    intensity : (n,) float64 or None
        Grey level in [0, 1] of each vertex's pixel when an image was given.
    max_edge_mm : float
        The discontinuity threshold that was used.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    corr: np.ndarray
    pixels: np.ndarray
    resolution: tuple[int, int]
    intensity: np.ndarray | None
    max_edge_mm: float

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])


def image_intensity(image) -> np.ndarray:
    """(R, C) float64 luminance in [0, 1] of a uint8 RGB (or grey) image (Rec. 709 weights)."""
    im = np.asanyarray(image)
    if im.ndim == 3 and im.shape[2] >= 3:
        g = im[..., :3].astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    elif im.ndim == 2:
        g = im.astype(np.float64)
    else:
        raise ValueError(f"image must be (R, C, 3) or (R, C), got {im.shape}")
    if im.dtype == np.uint8:
        g = g / 255.0
    return g


def _smooth_normals(normals: np.ndarray, tris: np.ndarray, iters: int) -> np.ndarray:
    n = len(normals)
    i = np.concatenate([tris[:, 0], tris[:, 1], tris[:, 2], np.arange(n)])
    j = np.concatenate([tris[:, 1], tris[:, 2], tris[:, 0], np.arange(n)])
    A = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    A = ((A + A.T) > 0).astype(np.float64)
    out = normals
    for _ in range(int(iters)):
        out = A @ out
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)
    return out


def build_target_mesh(
    xyz,
    mask,
    corr,
    max_edge_mm: float | None = None,
    image=None,
    normal_smooth_iters: int = 2,
) -> TargetMesh:
    """Build the target mesh from the network's maps.

    Parameters
    ----------
    xyz : (R, C, 3) float
        Label-frame positions, mm (see docs/reference/conventions.md).
    mask : (R, C) bool
        Valid pixels.
    corr : (R, C, 3) float
        Canonical correspondence in [0, 1].
    max_edge_mm : float, optional
        Triangles with an edge longer than this are dropped (depth discontinuities). Default:
        5 times the median distance between valid 4-neighbour pixels.
    image : (R, C, 3) uint8, optional
        Photo; its luminance is stored per vertex (for the fine-detail stage).
    normal_smooth_iters : int
        1-ring averaging passes applied to the vertex normals (not to the vertices); 0: none.

    Returns
    -------
    TargetMesh

    Raises
    ------
    ValueError
        On shape mismatches, non-finite values at valid pixels or fewer than 3 valid pixels.
    """
    xyz = np.asanyarray(xyz, dtype=np.float64)
    mask = np.asanyarray(mask)
    corr = np.asanyarray(corr, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be (R, C, 3), got {xyz.shape}")
    R, C = xyz.shape[:2]
    if mask.shape != (R, C):
        raise ValueError(f"mask must be {(R, C)} like xyz, got {mask.shape}")
    if corr.shape != (R, C, 3):
        raise ValueError(f"corr must be {(R, C, 3)} like xyz, got {corr.shape}")
    mask = mask.astype(bool)
    if not np.isfinite(xyz[mask]).all() or not np.isfinite(corr[mask]).all():
        raise ValueError("xyz / corr contain NaN or inf at valid pixels")
    n = int(mask.sum())
    if n < 3:
        raise ValueError(f"mask has {n} valid pixels; at least 3 are needed")

    index = np.full((R, C), -1, dtype=np.int64)
    rows, cols = np.nonzero(mask)
    index[rows, cols] = np.arange(n)
    verts = xyz[rows, cols]

    if max_edge_mm is None:
        dl = []
        for a, b in (((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
                     ((slice(0, -1), slice(None)), (slice(1, None), slice(None)))):
            ok = mask[a] & mask[b]
            dl.append(np.linalg.norm(xyz[a][ok] - xyz[b][ok], axis=1))
        d = np.concatenate(dl)
        max_edge_mm = 5.0 * float(np.median(d)) if d.size else np.inf
    max_edge_mm = float(max_edge_mm)
    if not max_edge_mm > 0:
        raise ValueError(f"max_edge_mm must be positive, got {max_edge_mm}")

    i00 = index[:-1, :-1].ravel()
    i01 = index[:-1, 1:].ravel()   # right
    i10 = index[1:, :-1].ravel()   # below
    i11 = index[1:, 1:].ravel()
    full = (i00 >= 0) & (i01 >= 0) & (i10 >= 0) & (i11 >= 0)
    # (p00, p10, p01) and (p01, p10, p11): with x right, y down these face -z (the camera)
    tris = np.concatenate([
        np.stack([i00[full], i10[full], i01[full]], axis=1),
        np.stack([i01[full], i10[full], i11[full]], axis=1),
    ])
    if len(tris):
        p = verts[tris]
        e = np.stack([np.linalg.norm(p[:, 1] - p[:, 0], axis=1),
                      np.linalg.norm(p[:, 2] - p[:, 1], axis=1),
                      np.linalg.norm(p[:, 0] - p[:, 2], axis=1)], axis=1)
        tris = tris[e.max(axis=1) <= max_edge_mm]

    if len(tris):
        normals = _smooth_normals(vertex_normals(verts, tris), tris, normal_smooth_iters)
    else:
        normals = np.zeros_like(verts)

    intensity = None
    if image is not None:
        g = image_intensity(image)
        if g.shape != (R, C):
            raise ValueError(f"image must be {(R, C)} like xyz, got {g.shape[:2]}")
        intensity = g[rows, cols]

    out = TargetMesh(
        vertices=verts,
        faces=tris.astype(np.int64),
        normals=normals,
        corr=corr[rows, cols].copy(),
        pixels=np.stack([rows, cols], axis=1).astype(np.int64),
        resolution=(R, C),
        intensity=intensity,
        max_edge_mm=max_edge_mm,
    )
    for arr in (out.vertices, out.faces, out.normals, out.corr, out.pixels):
        arr.setflags(write=False)
    if intensity is not None:
        intensity.setflags(write=False)
    return out
