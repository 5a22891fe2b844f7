"""Fine detail on the registered template (numpy/scipy, no bpy).

Steps (units: mm; intensity is luminance in [0, 1]):

1. **Subdivide** the registered template ``levels`` times with Blender's *Simple* subdivision
   layout: per level, the original vertices first (same order), then one vertex per edge (edge
   midpoint, in the order of ``edges``), then one per polygon (its centroid, polygon order);
   every n-gon becomes n quads. With ``edges`` set to the Blender mesh's own edge list
   (``mesh.edges[i].vertices``) level 1 reproduces a Simple Subdivision Surface modifier at
   level 1 vertex for vertex (checked with bpy 5.0.1). ``levels=2`` equals two stacked level-1
   passes (Blender's single level-2 modifier orders its vertices differently: build the mesh
   from ``DetailResult.vertices/faces`` instead). The subdivided vertices are
   ``DetailResult.subdivision @ coarse_vertices`` (a sparse averaging matrix).
2. **Paint** each subdivided vertex with the intensity of its pixel: the inverse-distance
   weighted grey level of the 4 nearest target-mesh vertices (each one a pixel) within
   ``max_dist_mm``; vertices farther from the target (not seen) get no detail.
3. **High frequencies**: ``mu = tau - (I - dt * Lrw)^-1 tau`` with ``Lrw = -D^-1 L`` the
   (normalised) cotangent Laplacian of the subdivided mesh, ``dt = 0.2``.
4. **Displacement** along the vertex normal::

       d = gain_mm * eta * delta_mu + (1 - eta) * delta_s

   ``delta_mu = -(Lrw mu)`` (the paper's equation 13: the cotangent-weighted difference between
   a vertex's ``mu`` and its neighbours'; bright bumps out, dark creases in), scaled by
   ``gain_mm`` (mm per unit of intensity, an assumption of this implementation: the paper
   leaves the scale to the renderer; Blender's Displace strength scales it further).
   ``delta_s = (Lrw x) . n`` is one explicit mean-curvature fairing step (step 1, normalised
   cotangent weights) of the subdivided surface, along the normal. ``eta = 0.2``.
   The detail term is multiplied by ``weights``: zero within ``border_rings`` (3) rings of an
   unpainted vertex, times the optional feature damping; the fairing term is not (it does not
   depend on the image) and is zero on the mesh boundary.

The result is a per-vertex scalar field (mm) for a Displace modifier (direction: normal,
midlevel 0, strength 1 = millimetres in the label frame; 0.001 in metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy.spatial import cKDTree

from ..layout_cache import LayoutCache, array_key
from .laplacian import cotangent_laplacian, vertex_normals
from .nricp import triangulate
from .target_mesh import TargetMesh

__all__ = ["DetailResult", "detail_field", "feature_damping", "polygon_edges", "subdivide_corner_uvs",
           "subdivide_simple"]


@dataclass
class DetailResult:
    """Output of :func:`detail_field`.

    Attributes
    ----------
    vertices : (n, 3) float64
        Subdivided template, mm (Blender Simple-subdivision layout, see the module docstring).
    faces : (m, 4) int64
        Quads of the subdivided mesh.
    displacement : (n,) float64
        Displacement along ``normals``, mm: ``detail + smooth``.
    detail : (n,) float64
        ``gain_mm * eta * delta_mu * weights``, mm (zero on a flat image).
    smooth : (n,) float64
        ``(1 - eta) * delta_s``, mm (image independent).
    normals : (n, 3) float64
        Unit vertex normals of the subdivided mesh (the template's orientation).
    intensity : (n,) float64
        Painted intensity (NaN where the vertex is not seen).
    weights : (n,) float64
        Visibility x damping applied to the detail term, in [0, 1].
    subdivision : (n, V) scipy.sparse.csr_matrix
        ``vertices = subdivision @ coarse_vertices`` (also maps any per-vertex field).
    """

    vertices: np.ndarray
    faces: np.ndarray
    displacement: np.ndarray
    detail: np.ndarray
    smooth: np.ndarray
    normals: np.ndarray
    intensity: np.ndarray
    weights: np.ndarray
    subdivision: sp.csr_matrix


def _polys(faces) -> np.ndarray:
    f = np.asanyarray(faces)
    if f.ndim != 2 or f.shape[1] not in (3, 4):
        raise ValueError(f"faces must be (F, 3) or (F, 4) (-1 padded), got {f.shape}")
    return f.astype(np.int64)


def polygon_edges(faces) -> np.ndarray:
    """(E, 2) int64 unique edges in order of first appearance walking the polygons' corners."""
    f = _polys(faces)
    n = (f >= 0).sum(axis=1)
    a = f.copy()
    b = np.roll(f, -1, axis=1)
    if f.shape[1] == 4:
        tri = n == 3
        b[tri, 2] = f[tri, 0]
        b[tri, 3] = -1
    e = np.stack([a.ravel(), b.ravel()], axis=1)
    e = e[(e >= 0).all(axis=1)]
    key = np.sort(e, axis=1)
    _, first = np.unique(key[:, 0] * (key.max() + 1) + key[:, 1], return_index=True)
    return e[np.sort(first)]


def subdivide_simple(n_vertices: int, faces, edges=None):
    """One level of Simple subdivision (Blender layout).

    Parameters
    ----------
    n_vertices : int
    faces : (F, 3) or (F, 4) int, -1 padded.
    edges : (E, 2) int, optional
        Edge order (Blender: ``mesh.edges``); default :func:`polygon_edges`.

    Returns
    -------
    S : (n_vertices + E + F, n_vertices) csr_matrix, averaging weights of the new vertices.
    quads : (sum of polygon sizes, 4) int64
    """
    f = _polys(faces)
    F = len(f)
    e = polygon_edges(f) if edges is None else np.asanyarray(edges, dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"edges must be (E, 2), got {e.shape}")
    E = len(e)
    V = int(n_vertices)
    key = np.sort(e, axis=1)
    kk = key[:, 0] * V + key[:, 1]
    order = np.argsort(kk)
    kk_sorted = kk[order]
    n = (f >= 0).sum(axis=1)
    rows = [np.arange(V), V + np.repeat(np.arange(E), 2)]
    cols = [np.arange(V), e.ravel()]
    vals = [np.ones(V), np.full(2 * E, 0.5)]
    valid = f >= 0
    fr = np.repeat(np.arange(F), f.shape[1])[valid.ravel()]
    rows.append(V + E + fr)
    cols.append(f[valid])
    vals.append(1.0 / n[fr])
    S = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(V + E + F, V))

    def edge_id(a, b):
        k = np.minimum(a, b) * V + np.maximum(a, b)
        pos = np.searchsorted(kk_sorted, k)
        pos = np.minimum(pos, len(kk_sorted) - 1)
        if not (kk_sorted[pos] == k).all():
            raise ValueError("edges does not contain every polygon edge")
        return V + order[pos]

    quads = []
    for size in (3, 4):
        sel = np.flatnonzero(n == size)
        if not sel.size:
            continue
        c = f[sel, :size]
        centre = V + E + sel
        for k in range(size):
            a = c[:, k]
            nxt = c[:, (k + 1) % size]
            prv = c[:, (k - 1) % size]
            quads.append((sel, k, np.stack([a, edge_id(a, nxt), centre, edge_id(prv, a)], axis=1)))
    # order the quads polygon by polygon, corner by corner
    sel_all = np.concatenate([q[0] for q in quads])
    k_all = np.concatenate([np.full(len(q[0]), q[1]) for q in quads])
    Q = np.concatenate([q[2] for q in quads])
    Q = Q[np.lexsort((k_all, sel_all))]
    return S, Q


def _adjacency(quads: np.ndarray, n: int) -> sp.csr_matrix:
    """(n, n) vertex adjacency (polygon edges) of a -1 padded polygon array."""
    e = np.stack([quads.ravel(), np.roll(quads, -1, axis=1).ravel()], axis=1)
    e = e[(e >= 0).all(axis=1)]
    A = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    return ((A + A.T) > 0).astype(np.float64).tocsr()


def _boundary_vertices(quads: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: vertices on an edge used by only one polygon."""
    e = np.stack([quads.ravel(), np.roll(quads, -1, axis=1).ravel()], axis=1)
    e = np.sort(e[(e >= 0).all(axis=1)], axis=1)
    k, cnt = np.unique(e[:, 0] * n + e[:, 1], return_counts=True)
    b = k[cnt == 1]
    out = np.zeros(n, dtype=bool)
    out[b // n] = True
    out[b % n] = True
    return out


def feature_damping(template_vertices, landmarks_68, radius_mm: float = 4.0,
                    falloff_mm: float = 6.0) -> np.ndarray:
    """Per-vertex weights in [0, 1] that switch the detail off at brows, eyes and lips.

    The intensity there is albedo (hair, eyelids, lip colour), not shape. Weight 0 within
    ``radius_mm`` of the iBUG-68 brow (17-26), eye (36-47) and lip (48-67) landmark polylines,
    rising smoothly to 1 over ``falloff_mm``.

    Parameters
    ----------
    template_vertices : (V, 3) float, mm (any frame; the neutral template is fine).
    landmarks_68 : (68,) int, vertex indices of the landmarks.

    Returns
    -------
    (V,) float64
    """
    v = np.asanyarray(template_vertices, dtype=np.float64)
    lm = np.asanyarray(landmarks_68, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or lm.shape != (68,):
        raise ValueError("template_vertices must be (V, 3) and landmarks_68 (68,)")
    chains = [range(17, 22), range(22, 27), list(range(36, 42)) + [36],
              list(range(42, 48)) + [42], list(range(48, 60)) + [48], list(range(60, 68)) + [60]]
    pts = []
    for ch in chains:
        p = v[lm[list(ch)]]
        for a, b in zip(p[:-1], p[1:]):
            t = np.linspace(0, 1, 8)[:, None]
            pts.append(a + t * (b - a))
    d, _ = cKDTree(np.concatenate(pts)).query(v)
    x = np.clip((d - radius_mm) / falloff_mm, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def detail_field(
    vertices_mm,
    faces,
    target: TargetMesh | None = None,
    intensity=None,
    levels: int = 1,
    dt: float = 0.2,
    eta: float = 0.2,
    gain_mm: float = 10.0,
    damping=None,
    edges=None,
    max_dist_mm: float = 3.0,
    border_rings: int = 3,
) -> DetailResult:
    """Per-vertex fine-detail displacement of the subdivided registered template.

    Parameters
    ----------
    vertices_mm : (V, 3) float
        Registered template, mm, label frame.
    faces : (F, 4) or (F, 3) int
        Template polygons (-1 padded).
    target : TargetMesh, optional
        With ``intensity`` (built with ``image=``): paints the subdivided vertices.
    intensity : callable or (n,) float, optional
        Instead of ``target``: ``intensity(points (n, 3) mm) -> (n,)`` (NaN = not seen), or an
        array over the *subdivided* vertices.
    levels : {1, 2}
        Subdivision levels.
    dt : float
        Step of the implicit diffusion that separates the high frequencies.
    eta : float
        Weight of the detail term against the fairing term.
    gain_mm : float
        mm of displacement per unit of ``delta_mu`` (intensity units).
    damping : (V,) float in [0, 1], optional
        Per coarse vertex (e.g. :func:`feature_damping`); subdivided like the positions.
    edges : (E, 2) int, optional
        Coarse edge order for level 1 (Blender's ``mesh.edges``), see the module docstring.
    max_dist_mm : float
        A subdivided vertex farther than this from the target is not painted.
    border_rings : int
        The detail is zero within this many edge rings of a vertex that is not painted.

    Returns
    -------
    DetailResult

    Raises
    ------
    ValueError
        On bad shapes or parameters, or if neither ``target`` (with intensity) nor
        ``intensity`` is given.
    """
    v = np.asanyarray(vertices_mm, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
        raise ValueError(f"vertices_mm must be finite (V, 3), got {v.shape}")
    f = _polys(faces)
    if f.max() >= len(v):
        raise ValueError("faces index beyond vertices_mm")
    if levels not in (1, 2):
        raise ValueError(f"levels must be 1 or 2, got {levels}")
    if not (dt > 0 and 0 <= eta <= 1):
        raise ValueError("dt must be > 0 and eta in [0, 1]")
    if target is None and intensity is None:
        raise ValueError("give target (a TargetMesh built with image=) or intensity")
    if target is not None and target.intensity is None:
        raise ValueError("target has no intensity: build it with build_target_mesh(..., image=)")

    S = sp.identity(len(v), format="csr")
    quads = f
    for lev in range(levels):
        S1, quads = subdivide_simple(S.shape[0], quads, edges if lev == 0 else None)
        S = (S1 @ S).tocsr()
    x = S @ v
    n_sub = len(x)
    tris = triangulate(quads)
    normals = vertex_normals(x, tris)
    # orientation: the template's own (normals of the coarse mesh, subdivided)
    Lc = cotangent_laplacian(x, tris)
    d = Lc.diagonal()
    d_safe = np.where(d > 0, d, 1.0)

    # paint
    if target is not None:
        tree = cKDTree(np.asarray(target.vertices))
        k = min(4, target.n_vertices)
        dist, idx = tree.query(x, k=k, distance_upper_bound=max_dist_mm, workers=-1)
        dist = dist.reshape(n_sub, k)
        idx = idx.reshape(n_sub, k)
        ok = np.isfinite(dist)
        w = np.where(ok, 1.0 / np.maximum(dist, 1e-3), 0.0)
        vals = np.asarray(target.intensity)[np.minimum(idx, target.n_vertices - 1)]
        ws = w.sum(axis=1)
        tau = np.divide((w * vals).sum(axis=1), ws, out=np.full(n_sub, np.nan), where=ws > 0)
    elif callable(intensity):
        tau = np.asarray(intensity(x), dtype=np.float64).reshape(n_sub)
    else:
        tau = np.asanyarray(intensity, dtype=np.float64)
        if tau.shape != (n_sub,):
            raise ValueError(f"intensity must have one value per subdivided vertex ({n_sub})")
    seen = np.isfinite(tau)
    # no detail within border_rings rings of an unseen vertex (the filled-in intensity there
    # would make a step at the edge of what the camera saw)
    adj = _adjacency(quads, n_sub)
    unseen = ~seen
    for _ in range(int(border_rings)):
        unseen = unseen | ((adj @ unseen.astype(np.float64)) > 0)
    weights = (~unseen).astype(np.float64)
    if damping is not None:
        dmp = np.asanyarray(damping, dtype=np.float64)
        if dmp.shape != (len(v),):
            raise ValueError(f"damping must be ({len(v)},), got {dmp.shape}")
        weights *= np.clip(S @ dmp, 0.0, 1.0)
    # unseen vertices: fill tau harmonically-ish with the mean of seen ones (their detail is 0)
    tau_f = np.where(seen, tau, np.nanmean(tau) if seen.any() else 0.0)

    # mu = tau - (I + dt D^-1 L)^-1 tau  <=>  (D + dt L) s = D tau
    A = (sp.diags(d_safe) + dt * Lc).tocsr()
    s, info = sla.cg(A, d_safe * tau_f, x0=tau_f, rtol=1e-8, maxiter=200,
                     M=sp.diags(1.0 / A.diagonal()))
    mu = tau_f - s
    lrw = lambda y: -(Lc @ y) / d_safe[(...,) + (None,) * (y.ndim - 1)]  # noqa: E731
    delta_mu = -lrw(mu)
    delta_s = np.einsum("ij,ij->i", lrw(x), normals)
    delta_s[_boundary_vertices(quads, n_sub)] = 0.0  # one-sided umbrella: no fairing there
    detail = gain_mm * eta * delta_mu * weights
    smooth = (1.0 - eta) * delta_s
    quads.setflags(write=False)  # the layout of every result: read-only, its cache keys are remembered
    out = DetailResult(vertices=x, faces=quads, displacement=detail + smooth, detail=detail,
                       smooth=smooth, normals=normals, intensity=np.where(seen, tau, np.nan),
                       weights=weights, subdivision=S)
    return out


_CORNER_UVS: LayoutCache[np.ndarray] = LayoutCache("subdivided corner UVs", 4)


def subdivide_corner_uvs(faces: np.ndarray, corner_uvs: np.ndarray, levels: int = 1) -> np.ndarray:
    """Per-corner UVs (Q, 4, 2) float64 of the quads of ``geometry.detail.subdivide_simple``
    (same quad order), for polygons ``faces`` (F, 4, -1 padded) with UVs ``corner_uvs`` (F, 4, 2).

    Every polygon corner is made a vertex of its own, so the Simple subdivision of that
    "corner mesh" interpolates UVs inside each polygon and never across a UV seam. The same for
    every reconstruction onto one template: kept per layout (read-only, as cached values are)."""
    f = np.asarray(faces)
    uv = np.asarray(corner_uvs)
    return _CORNER_UVS.get(array_key(f, uv, int(levels)), lambda: _subdivide_corner_uvs(f, uv, int(levels)))


def _subdivide_corner_uvs(f: np.ndarray, corner_uvs: np.ndarray, levels: int) -> np.ndarray:
    valid = f >= 0
    ids = np.full(f.shape, -1, dtype=np.int64)
    ids[valid] = np.arange(int(valid.sum()))
    values = np.asarray(corner_uvs, dtype=np.float64)[valid]
    for _ in range(levels):
        s, ids = subdivide_simple(len(values), ids)
        values = s @ values
    return values[ids]
