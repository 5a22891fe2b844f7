"""Robust affine fit of the template to the target mesh from correspondences (numpy/scipy).

Pairs: each template vertex is matched to the target vertex nearest in correspondence space
(canonical coordinates scaled to millimetres per axis, see docs/reference/conventions.md); pairs farther
apart than ``max_corr_mm`` there (template vertices the target does not see) are not used.
RANSAC: ``iterations`` minimal samples of 4 pairs, each giving an exact affine map; the map with
most inliers (residual <= ``inlier_mm``, Euclidean, mm) wins and is refitted by least squares on
its inliers (twice: the inlier set is re-evaluated after the first refit). Hypotheses are
ranked on a fixed random subset of ``score_pairs`` pairs (2000), which ranks them like the full
set at a third of the cost.

Landmark pairs (``extra``: template points, their 3D positions in the target, weights; e.g. the
detected face-mesh points lifted onto the predicted geometry) join the hypotheses' scores (each
inlier counts its weight) and the refits (weighted least squares), with the same inlier test.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .target_mesh import TargetMesh

__all__ = ["apply_affine", "corr_pairs", "default_corr_scale_mm", "fit_affine_ransac"]


def default_corr_scale_mm() -> np.ndarray:
    """(3,) float64 mm per unit of correspondence of the ICT-FaceKit template (loads the model)."""
    from ..correspondence import corr_to_mm_scale
    from ..face_model import load_face_model

    return corr_to_mm_scale(load_face_model())


def _check_scale(corr_scale_mm) -> np.ndarray:
    if corr_scale_mm is None:
        return default_corr_scale_mm()
    s = np.asanyarray(corr_scale_mm, dtype=np.float64)
    if s.shape != (3,) or not (s > 0).all():
        raise ValueError(f"corr_scale_mm must be (3,) positive, got {s!r}")
    return s


def corr_pairs(template_canon, target: TargetMesh, corr_scale_mm=None, max_corr_mm: float = 3.0,
               tree: cKDTree | None = None):
    """Match template vertices to target vertices nearest in correspondence space.

    Parameters
    ----------
    template_canon : (V, 3) float, canonical coordinates in [0, 1] of the template vertices.
    target : TargetMesh
    corr_scale_mm : (3,) float, optional
        mm per unit of correspondence per axis (``correspondence.corr_to_mm_scale``).
    max_corr_mm : float
        Pairs farther apart than this in (scaled) correspondence space are dropped.
    tree : cKDTree, optional
        Prebuilt tree over ``target.corr * corr_scale_mm``.

    Returns
    -------
    template_index : (P,) int64
    target_index : (P,) int64
    corr_distance_mm : (P,) float64
    """
    s = _check_scale(corr_scale_mm)
    c = np.asanyarray(template_canon, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"template_canon must be (V, 3), got {c.shape}")
    if tree is None:
        tree = cKDTree(target.corr * s)
    d, j = tree.query(c * s, k=1, distance_upper_bound=max_corr_mm, workers=-1)
    ok = np.isfinite(d)
    i = np.flatnonzero(ok)
    return i.astype(np.int64), j[ok].astype(np.int64), d[ok]


def apply_affine(A, points) -> np.ndarray:
    """(n, 3) float64 ``points @ A[:, :3].T + A[:, 3]`` for a (3, 4) affine map ``A``."""
    A = np.asanyarray(A, dtype=np.float64)
    p = np.asanyarray(points, dtype=np.float64)
    if A.shape != (3, 4):
        raise ValueError(f"A must be (3, 4), got {A.shape}")
    return p @ A[:, :3].T + A[:, 3]


def _lstsq_affine(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    X = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    if w is not None:
        sw = np.sqrt(w)[:, None]
        X, y = X * sw, y * sw
    sol, *_ = np.linalg.lstsq(X, y, rcond=None)
    return sol.T  # (3, 4)


def fit_affine_ransac(
    template_mm,
    template_canon,
    target: TargetMesh,
    iterations: int = 1000,
    inlier_mm: float = 3.0,
    seed: int = 0,
    corr_scale_mm=None,
    max_corr_mm: float = 3.0,
    score_pairs: int = 2000,
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
):
    """Affine map of the template onto the target, robust to wrong correspondences.

    Parameters
    ----------
    template_mm : (V, 3) float
        Template vertices, mm, in any frame (e.g. the model frame; the map absorbs the rotation
        to the label frame).
    template_canon : (V, 3) float
        Their canonical coordinates in [0, 1].
    target : TargetMesh
        Label frame, mm.
    iterations : int
        RANSAC hypotheses (minimal samples of 4 pairs).
    inlier_mm : float
        Inlier threshold on the Euclidean residual, mm.
    seed : int
        Seed of the sampler (the result is deterministic for a seed).
    corr_scale_mm : (3,) float, optional
        mm per correspondence unit per axis; defaults to the ICT-FaceKit template's.
    max_corr_mm : float
        Correspondence-space gate of the pairs, mm.
    score_pairs : int
        Hypotheses are ranked by their inlier count on a fixed random subset of this many pairs
        (all pairs when fewer); the winner's inliers and refits use every pair.
    extra : (x (K, 3), y (K, 3), w (K,)), optional
        Further pairs (template frame -> target frame) with weights, e.g. landmarks; an inlier
        counts ``w`` in the scores and weighs ``w`` in the refits.

    Returns
    -------
    A : (3, 4) float64
        ``x_target = A[:, :3] @ x_template + A[:, 3]``.
    inliers : (V,) bool
        Template vertices whose pair is an inlier of the final map.
    info : dict
        ``n_pairs``, ``n_inliers``, ``best_iteration``, ``rms_mm`` (inliers), ``pairs``
        (template index, target index).

    Raises
    ------
    ValueError
        On bad shapes or parameters, or fewer than 4 correspondence pairs.
    """
    x_all = np.asanyarray(template_mm, dtype=np.float64)
    if x_all.ndim != 2 or x_all.shape[1] != 3:
        raise ValueError(f"template_mm must be (V, 3), got {x_all.shape}")
    canon = np.asanyarray(template_canon, dtype=np.float64)
    if canon.shape != x_all.shape:
        raise ValueError(f"template_canon must be {x_all.shape} like template_mm, got {canon.shape}")
    if int(iterations) < 1 or not inlier_mm > 0:
        raise ValueError("iterations must be >= 1 and inlier_mm > 0")
    ti, tj, _ = corr_pairs(canon, target, corr_scale_mm, max_corr_mm)
    if len(ti) < 4:
        raise ValueError(
            f"only {len(ti)} template vertices have a correspondence within {max_corr_mm} mm; "
            "the maps do not show a face (check mask / corr)")
    x = x_all[ti]
    y = np.asarray(target.vertices)[tj]
    P = len(ti)
    rng = np.random.default_rng(seed)
    n_it = int(iterations)
    # sample 4 distinct pairs per hypothesis
    samp = np.stack([rng.choice(P, 4, replace=False) for _ in range(n_it)]) if P < 64 else \
        rng.integers(0, P, size=(n_it, 4))
    Xs = np.concatenate([x[samp], np.ones((n_it, 4, 1))], axis=2)  # (n, 4, 4)
    Ys = y[samp]                                                     # (n, 4, 3)
    # well-conditioned minimal sets only (coplanar / repeated samples are degenerate)
    det = np.abs(np.linalg.det(Xs))
    scale = np.linalg.norm(x - x.mean(0), axis=1).mean() + 1e-12
    good = det > 1e-6 * scale ** 3
    Xs[~good] = np.eye(4)
    sol = np.linalg.solve(Xs, Ys)  # (n, 4, 3): rows are A^T with translation last
    count = np.zeros(n_it, dtype=np.float64)
    thr2 = float(inlier_mm) ** 2
    # hypotheses are ranked on a fixed random subset of at most score_pairs pairs
    sub = np.sort(rng.choice(P, score_pairs, replace=False)) if P > score_pairs else np.arange(P)
    xh = np.concatenate([x[sub], np.ones((len(sub), 1))], axis=1)
    ys = y[sub]
    for a in range(0, n_it, 128):
        r2 = np.square(np.matmul(xh, sol[a:a + 128]) - ys).sum(axis=2)  # (b, n)
        count[a:a + 128] = np.count_nonzero(r2 <= thr2, axis=1)
    if extra is not None:
        ex, ey, ew = (np.asarray(a, dtype=np.float64) for a in extra)
        if ex.shape != ey.shape or ex.shape != (len(ew), 3):
            raise ValueError(f"extra pairs must be (K, 3), (K, 3), (K,), got {ex.shape} {ey.shape} {ew.shape}")
        exh = np.concatenate([ex, np.ones((len(ex), 1))], axis=1)
        for a in range(0, n_it, 128):
            r2 = np.square(np.matmul(exh, sol[a:a + 128]) - ey).sum(axis=2)
            count[a:a + 128] += (r2 <= thr2).astype(np.float64) @ ew
    count[~good] = -1
    best = int(np.argmax(count))
    A = sol[best].T
    inl = ((apply_affine(A, x) - y) ** 2).sum(1) <= thr2
    for _ in range(2):
        if inl.sum() < 4:
            break
        if extra is None:
            A = _lstsq_affine(x[inl], y[inl])
        else:
            e_in = ((apply_affine(A, ex) - ey) ** 2).sum(1) <= thr2
            A = _lstsq_affine(np.concatenate([x[inl], ex[e_in]]), np.concatenate([y[inl], ey[e_in]]),
                              np.concatenate([np.ones(int(inl.sum())), ew[e_in]]))
        inl = ((apply_affine(A, x) - y) ** 2).sum(1) <= thr2
    r = np.linalg.norm(apply_affine(A, x[inl]) - y[inl], axis=1)
    inliers = np.zeros(len(x_all), dtype=bool)
    inliers[ti[inl]] = True
    info = dict(n_pairs=P, n_inliers=int(inl.sum()), best_iteration=best,
                best_count=float(count[best]) if extra is not None else int(count[best]),
                rms_mm=float(np.sqrt((r ** 2).mean())) if r.size else float("nan"),
                pairs=(ti, tj))
    return A, inliers, info
