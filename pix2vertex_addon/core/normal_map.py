"""The fine detail as a tangent-space normal map (no ``bpy``).

The detail field (:mod:`.geometry.detail`) moves each vertex of the subdivided template along
its normal. A Displace modifier shows it as geometry; exporters that drop modifiers (or keep
shape keys only without them) lose it. This module bakes the same detail into a tangent-space
normal map of the template's UV layout, so that the material alone carries the look:

* base surface: the subdivided template *without* displacement, with its area-weighted vertex
  normals ``N``;
* detailed surface: the same mesh displaced by ``strength * displacement`` along the normals;
  its vertex normals ``N_d``;
* tangent frame per polygon corner from the UV derivatives (the usual per-triangle tangent
  ``dP/du``, accumulated per vertex and UV island corner, made orthogonal to ``N``), bitangent
  ``sign * N x T`` with the sign of the UV orientation: the MikkTSpace convention of Blender
  and glTF (+x along u, +y along v, OpenGL "green up");
* texel value ``0.5 + 0.5 * (N_d . T, N_d . B, N_d . N)``, linear, 8 bit.
"""

from __future__ import annotations

import numpy as np

from .export import _unique_rows_2d
from .geometry.laplacian import vertex_normals
from .layout_cache import LayoutCache, array_key
from .projection import bake_vertex_field

__all__ = ["corner_tangents", "tangent_space_normals", "bake_normal_map", "decode_normal"]

_BLOCK = 1 << 15  # texels a block of the encoding (a few MB: the processor's cache)


def _quad_tris(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles (T, 3) of (F, 4) polygons (-1 padded) and, per triangle corner, the polygon
    corner it is: (T, 3) flat indices into ``faces``."""
    f = np.asarray(faces, dtype=np.int64)
    n = len(f)
    quad = f[:, 3] >= 0
    poly = np.concatenate([np.arange(n), np.flatnonzero(quad)])
    corner = np.concatenate([np.tile([0, 1, 2], (n, 1)), np.tile([0, 2, 3], (int(quad.sum()), 1))])
    return f[poly[:, None], corner], poly[:, None] * f.shape[1] + corner


_IDS: LayoutCache[np.ndarray] = LayoutCache("normal-map corner ids", 4)


def _corner_ids(f: np.ndarray) -> np.ndarray:
    """(F, 4) int64: each polygon corner numbered as a vertex of its own (-1 on padding); kept
    per layout (read-only), so that the bake's texel weights find their key at once."""

    def compute() -> np.ndarray:
        valid = f >= 0
        ids = np.full(f.shape, -1, dtype=np.int64)
        ids[valid] = np.arange(int(valid.sum()))
        return ids

    return _IDS.get(array_key(f), compute)


_GROUPS: LayoutCache[tuple[np.ndarray, int]] = LayoutCache("tangent-frame groups", 4)


def _corner_groups(f: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, int]:
    """Per polygon corner (flat), its group of corners sharing a vertex and a (rounded) UV: one
    tangent frame per vertex and UV island; -1 on padding. The same for every mesh with this
    layout, so it is kept per layout."""
    return _GROUPS.get(array_key(f, uv), lambda: _corner_groups_uncached(f, uv))


def _corner_groups_uncached(f: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, int]:
    valid = (f >= 0).ravel()
    flat_v = f.ravel()
    _, uv_id = _unique_rows_2d(np.round(np.nan_to_num(uv[valid]), 6))
    _, group = np.unique(flat_v[valid] * (int(uv_id.max(initial=0)) + 1) + uv_id, return_inverse=True)
    gid = np.full(len(flat_v), -1, dtype=np.int64)
    gid[valid] = group.ravel()
    return gid, int(group.max()) + 1 if group.size else 0


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) dot products of the rows of (N, 3) ``a`` and ``b``: ``(a * b).sum(axis=1)`` bit for
    bit (NumPy adds a row of three left to right; ``np.einsum`` does not), without its (N, 3)
    product and its slow reduction over a short axis."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of (N, 3) rows, written out (np.cross moves axes and makes temporaries)."""
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def corner_tangents(vertices: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray,
                    normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, 4, 3) unit tangent and bitangent per polygon corner (zeros on padding).

    Tangents are accumulated over the triangles that share a vertex *and* its UV (so UV seams
    keep separate frames), then made orthogonal to the vertex normal.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    uv = np.asarray(corner_uvs, dtype=np.float64).reshape(-1, 2)
    tris, corners = _quad_tris(f)
    p0, p1, p2 = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    t0, t1, t2 = uv[corners[:, 0]], uv[corners[:, 1]], uv[corners[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    d1, d2 = t1 - t0, t2 - t0
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    inv = np.divide(1.0, det, out=np.zeros_like(det), where=np.abs(det) > 1e-20)
    tan = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv[:, None]
    bit = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv[:, None]
    valid = (f >= 0).ravel()
    flat_v = f.ravel()
    gid, n_g = _corner_groups(f, uv)
    acc_t = np.zeros((n_g, 3))
    acc_b = np.zeros((n_g, 3))
    for k in range(3):
        g = gid[corners[:, k]]
        for c in range(3):
            acc_t[:, c] += np.bincount(g, tan[:, c], minlength=n_g)
            acc_b[:, c] += np.bincount(g, bit[:, c], minlength=n_g)
    n_c = np.asarray(normals, dtype=np.float64)[np.maximum(flat_v, 0)]
    t_c = acc_t[np.maximum(gid, 0)]
    b_c = acc_b[np.maximum(gid, 0)]
    # row dot products and the cross product written out (the arithmetic of ``.sum(axis=1)`` and
    # ``np.cross``, without their temporaries)
    t_c = t_c - n_c * _rowdot(t_c, n_c)[:, None]
    t_c /= np.sqrt(_rowdot(t_c, t_c))[:, None] + 1e-30
    cross = _cross(n_c, t_c)
    sign = np.sign(_rowdot(cross, b_c))[:, None]
    sign[sign == 0] = 1.0
    b_c = sign * cross
    t_c[~valid] = 0.0
    b_c[~valid] = 0.0
    return t_c.reshape(f.shape + (3,)), b_c.reshape(f.shape + (3,))


def tangent_space_normals(base_vertices: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray,
                          displacement: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """(F, 4, 3) tangent-space normal per polygon corner of the displaced surface.

    base_vertices : (V, 3) undisplaced mesh.  faces : (F, 4) int, -1 padded.
    displacement : (V,) along the base vertex normals (the units of ``base_vertices``).
    """
    v = np.asarray(base_vertices, dtype=np.float64)
    tris, _ = _quad_tris(faces)
    n = vertex_normals(v, tris)
    nd = vertex_normals(v + strength * np.asarray(displacement, dtype=np.float64)[:, None] * n, tris)
    t, b = corner_tangents(v, faces, corner_uvs, n)
    f = np.asarray(faces, dtype=np.int64)
    idx = np.maximum(f, 0)
    nc, ndc = n[idx], nd[idx]
    out = np.empty(f.shape + (3,))
    for k, axis in enumerate((t, b, nc)):
        out[..., k] = _rowdot(ndc.reshape(-1, 3), axis.reshape(-1, 3)).reshape(f.shape)
    out[f < 0] = 0.0
    return out


def bake_normal_map(base_vertices: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray, displacement: np.ndarray,
                    size: int = 1024, strength: float = 1.0) -> np.ndarray:
    """(size, size, 3) uint8 tangent-space normal map (row 0 = v of 1, as images are stored);
    flat (128, 128, 255) outside the UV islands."""
    f = np.asarray(faces, dtype=np.int64)
    if f.shape[1] == 3:
        f = np.concatenate([f, np.full((len(f), 1), -1)], axis=1)
        corner_uvs = np.concatenate([np.asarray(corner_uvs), np.full((len(f), 1, 2), np.nan)], axis=1)
    ts = tangent_space_normals(base_vertices, f, corner_uvs, displacement, strength)
    # bake per corner: every polygon corner is a vertex of its own (no blending across seams)
    valid = f >= 0
    ids = _corner_ids(f)
    flat = np.array([0.0, 0.0, 1.0])
    # baked as the difference to the flat normal, so that texels outside the islands are flat
    field = bake_vertex_field(ts[valid] - flat, ids, corner_uvs, size=size, bleed=2).reshape(-1, 3)
    out = np.empty((size * size, 3), dtype=np.uint8)
    for a in range(0, len(field), _BLOCK):  # unit length and 8 bits, in blocks that stay in the cache
        n = field[a:a + _BLOCK] + flat
        n /= np.sqrt(_rowdot(n, n))[:, None] + 1e-12  # np.linalg.norm's sum of squares, in order
        out[a:a + _BLOCK] = np.clip((n * 0.5 + 0.5) * 255.0 + 0.5, 0, 255)
    return out.reshape(size, size, 3)


def decode_normal(rgb: np.ndarray) -> np.ndarray:
    """Unit tangent-space normals from 8-bit normal-map texels (..., 3)."""
    n = np.asarray(rgb, dtype=np.float64) / 255.0 * 2.0 - 1.0
    return n / (np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12)
