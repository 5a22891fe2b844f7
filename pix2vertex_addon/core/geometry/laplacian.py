"""Cotangent Laplacian, lumped mass and vertex normals of triangle meshes (numpy/scipy, no bpy).

Conventions
-----------
``L`` is the *stiffness* (positive semi-definite) cotangent Laplacian::

    (L x)_i = sum_j w_ij (x_i - x_j),   w_ij = (cot alpha_ij + cot beta_ij) / 2

so ``x^T L x = sum_edges w_ij |x_i - x_j|^2`` is the membrane (Dirichlet) energy of ``x``.
``L`` is dimensionless (cotangents); the discrete Laplace-Beltrami operator is ``-M^-1 L`` with
the lumped (barycentric) mass ``M`` in the squared unit of the vertices.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "check_mesh",
    "cotangent_laplacian",
    "face_normals",
    "lumped_mass",
    "vertex_normals",
]


def check_mesh(vertices, triangles, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a triangle mesh.

    Parameters
    ----------
    vertices : (n, 3) float
    triangles : (m, 3) int, indices into ``vertices``

    Returns
    -------
    vertices : (n, 3) float64
    triangles : (m, 3) int64

    Raises
    ------
    ValueError
        On wrong shapes, non-finite vertices or out-of-range indices.
    """
    v = np.asanyarray(vertices, dtype=np.float64)
    t = np.asanyarray(triangles)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{name}: vertices must be (n, 3), got {v.shape}")
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"{name}: triangles must be (m, 3), got {t.shape}; triangulate quads first")
    if t.size and t.dtype.kind not in "iu":
        raise ValueError(f"{name}: triangles must be integers, got {t.dtype}")
    t = t.astype(np.int64, copy=False)
    if t.size and (t.min() < 0 or t.max() >= len(v)):
        raise ValueError(f"{name}: triangle indices out of range [0, {len(v)})")
    if not np.isfinite(v).all():
        raise ValueError(f"{name}: vertices contain NaN or inf")
    return v, t


def face_normals(vertices: np.ndarray, triangles: np.ndarray, unit: bool = True) -> np.ndarray:
    """(m, 3) float64 triangle normals (right-hand rule); area-weighted (x2) if ``unit`` is False."""
    v = vertices
    n = np.cross(v[triangles[:, 1]] - v[triangles[:, 0]], v[triangles[:, 2]] - v[triangles[:, 0]])
    if unit:
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    return n


def vertex_normals(vertices, triangles, incidence: sp.spmatrix | None = None) -> np.ndarray:
    """Area-weighted vertex normals (the one vertex-normal routine: geometry and synthetic data).

    Parameters
    ----------
    vertices : (n, 3) float; float32 stays float32 (the renderer's fast path), else float64.
    triangles : (m, 3) int
    incidence : optional (n, m) sparse matrix with ones where a vertex is a triangle's corner
        (``synth.mesh.RenderMesh.incidence``); given, it sums the triangle normals in one product.

    Returns
    -------
    (n, 3) unit normals; (0, 0, 0) for vertices in no triangle.
    """
    v = np.asarray(vertices)
    if v.dtype != np.float32:
        v, triangles = check_mesh(v, triangles)
    t = np.asarray(triangles)
    a = np.take(v, t[:, 0], axis=0)
    e1 = np.take(v, t[:, 1], axis=0) - a
    e2 = np.take(v, t[:, 2], axis=0) - a
    fn = np.empty_like(e1)  # the cross product, written out (np.cross is slow on (m, 3) rows)
    fn[:, 0] = e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1]
    fn[:, 1] = e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2]
    fn[:, 2] = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    if incidence is not None:
        n = np.asarray(incidence @ fn)
    else:
        n = np.zeros_like(v)
        for c in range(3):
            n[:, c] = sum(np.bincount(t[:, k], fn[:, c], minlength=len(v)) for k in range(3))
    norm = np.sqrt(n[:, 0] * n[:, 0] + n[:, 1] * n[:, 1] + n[:, 2] * n[:, 2])[:, None]
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def _cotangents(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(m, 3) cotangent of the angle at corner k of each triangle."""
    cots = np.empty((len(t), 3))
    for k in range(3):
        a = v[t[:, (k + 1) % 3]] - v[t[:, k]]
        b = v[t[:, (k + 2) % 3]] - v[t[:, k]]
        cross = np.linalg.norm(np.cross(a, b), axis=1)
        cots[:, k] = np.einsum("ij,ij->i", a, b) / np.maximum(cross, 1e-12)
    return cots


def cotangent_laplacian(vertices, triangles, clamp: float | None = None) -> sp.csr_matrix:
    """Cotangent Laplacian (stiffness form, positive semi-definite).

    Parameters
    ----------
    vertices : (n, 3) float
        Any length unit; ``L`` is scale invariant.
    triangles : (m, 3) int
    clamp : float, optional
        Clamp each cotangent to ``[-clamp, clamp]`` (guards degenerate, needle triangles).

    Returns
    -------
    L : (n, n) scipy.sparse.csr_matrix, float64
        Symmetric, rows sum to zero, ``x^T L x = sum_edges w_ij |x_i - x_j|^2``.
    """
    v, t = check_mesh(vertices, triangles)
    n = len(v)
    cots = _cotangents(v, t)
    if clamp is not None:
        cots = np.clip(cots, -clamp, clamp)
    # the edge opposite corner k joins corners k+1 and k+2
    i = np.concatenate([t[:, 1], t[:, 2], t[:, 0]])
    j = np.concatenate([t[:, 2], t[:, 0], t[:, 1]])
    w = 0.5 * np.concatenate([cots[:, 0], cots[:, 1], cots[:, 2]])
    W = sp.coo_matrix((w, (i, j)), shape=(n, n)).tocsr()
    W = W + W.T
    d = np.asarray(W.sum(axis=1)).ravel()
    return (sp.diags(d) - W).tocsr()


def lumped_mass(vertices, triangles) -> np.ndarray:
    """(n,) float64 barycentric vertex areas (a third of each incident triangle's area)."""
    v, t = check_mesh(vertices, triangles)
    area = 0.5 * np.linalg.norm(face_normals(v, t, unit=False), axis=1)
    out = np.zeros(len(v))
    for k in range(3):
        out += np.bincount(t[:, k], area, minlength=len(v))
    return out / 3.0
