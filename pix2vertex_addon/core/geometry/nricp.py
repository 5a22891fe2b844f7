"""Non-rigid registration of the template to the target mesh (numpy/scipy, no bpy).

The supplement's scheme, with its parameters as data (:class:`RegistrationParams`). Units: the
template and target are in **millimetres** (label frame); every distance threshold is in mm,
angles in degrees. Only the template moves; the target is never modified.

Per outer iteration:

1. *Match* every template vertex to a target vertex: nearest in correspondence space
   (canonical coordinates scaled to mm per axis, ``corr_to_mm_scale``) until the switch, then
   nearest in space (Euclidean, from the current template position).
2. *Prune* pairs farther apart than ``max_pair_mm`` (1 mm), measured in the space used for the
   matching (correspondence-mm, then Euclidean mm). Correspondence phase: pairs whose
   displacement differs by more than ``outlier_mm`` (5 mm) from the median displacement of their
   ``outlier_neighbours`` (12) nearest pairs in canonical space (evaluated at the start of each
   stiffness level) are dropped (wrong
   correspondences: random network outputs), and so are pairs whose normals differ by more than
   ``corr_max_normal_deg`` (60 degrees: surfaces facing apart, such as the upper and lower inner
   lips, which touch in the neutral face and so have nearly equal canonical coordinates); the
   supplement's 5 degree test is too strict while the template is still far off
   (``corr_normal_test=True`` applies it anyway). Euclidean phase: pairs whose normals differ
   by more than
   ``max_normal_deg`` (5 degrees) are dropped (template normal at the current shape vs the
   target's normal).
3. *Solve* for the template vertices ``v`` minimising::

       w_point * sum_pairs |v_i - c_i|^2 + w_plane * sum_pairs (n_c . (v_i - c_i))^2
         + a_memb * membrane_scale * E_memb(v - v_ref)

   with ``E_memb(d) = sum_edges w_ij |d_i - d_j|^2 = trace(d^T L d)``, ``L`` the cotangent
   Laplacian of the template (``laplacian.cotangent_laplacian``; ``w_ij`` = half the sum of the
   cotangents opposite edge ij): the membrane energy of the displacement with cotangent weights.
   ``membrane_scale = 1e-6`` measures it with the displacement in metres (the data terms are in
   mm^2); with that unit the supplement's schedule (stop once ``a_memb < 1e6``) ends at a
   stiffness that still lets features of ~15 mm follow the data. ``v_ref`` is the template at
   the start of the current stiffness level (``reference="level"``, default: deformation
   accumulates over the levels, and a vertex that loses its pair is not pulled back to the
   affine fit) or the input template (``reference="initial"``). A tiny ``anchor`` term
   ``|v - v_ref|^2`` keeps the system definite when nothing matches. The quadratic is solved by
   the *inner loop*: preconditioned conjugate gradients on the 3V system, preconditioned by a
   sparse LU of the V x V matrix ``a L + diag(w_point + w_plane / 3)`` (matched vertices),
   refactorised only when the stiffness changed by more than ``refactor_ratio`` (3x) or more
   than ``refactor_fraction`` (2 %) of the pair set changed; the inner loop stops when the largest vertex update is below ``inner_tol_mm``
   (0.01 **mm**).
   With detected landmarks (``landmarks``, a :class:`.landmark_term.LandmarkTerm`), the
   quadratic also holds ``w_landmark`` times their reprojection term linearised at the current
   vertices (image-plane distance in the crop's camera, robust and visibility-gated weights:
   ``landmark_term.py``); ``w_landmark = 0`` (default) is the paper's dense-only fit. The
   optional ``w_landmark_depth`` adds the detector's own depth of the points (scale and shift
   fitted per face) as a linear term; measured without gain, it is off.
   ``landmark_last_levels``: in the last that many stiffness levels of the schedule (``a_memb <
   a_memb_stop * 2**landmark_last_levels``) the landmark terms' weights are multiplied by
   ``landmark_last_scale`` (0: off, the dense terms alone finish the fit; 0 levels: landmarks
   to the end).
4. If the template moved (largest vertex displacement over the iteration) less than
   ``move_tol_mm`` (0.1 mm), halve ``a_memb``. Switch to Euclidean matching once the number of
   pairs changes by fewer than ``switch_match_change`` (500) between iterations *and*
   (``switch="close"``, default) the ``switch_quantile`` (90 %) quantile of the pairs' Euclidean
   distance is within ``max_pair_mm``, so that the switch does not drop the pairs of regions
   still far from the target; ``switch="spec"`` uses the count alone. Stop when
   ``a_memb < a_memb_stop`` (1e6).

docs/reference/geometry.md explains the deviations from a literal reading (and measures them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy.spatial import cKDTree

from .affine import _check_scale
from .landmark_term import LandmarkTerm
from .laplacian import check_mesh, cotangent_laplacian, vertex_normals
from .target_mesh import TargetMesh

__all__ = ["LANDMARK_DEPTH_PARAMS", "LANDMARK_PARAMS", "RegistrationParams", "RegistrationResult", "register", "triangulate"]


@dataclass(frozen=True)
class RegistrationParams:
    """Schedule and weights of :func:`register` (defaults: the supplement's values).

    Attributes
    ----------
    w_point, w_plane : float
        Weights of the point-to-point and point-to-plane terms (per pair, mm^2).
    a_memb_start, a_memb_stop : float
        Initial membrane weight; stop once it is below ``a_memb_stop``.
    membrane_scale : float
        Unit factor of the membrane energy (1e-6: displacements in metres).
    max_pair_mm : float
        Pairs farther apart than this (correspondence-mm or Euclidean mm) are dropped.
    max_normal_deg : float
        Pairs whose normals differ by more than this many degrees are dropped.
    move_tol_mm : float
        ``a_memb`` is halved when no vertex moved more than this in an outer iteration.
    inner_tol_mm : float
        The inner loop stops when no vertex changes by more than this, mm.
    switch_match_change : int
        Switch to Euclidean matching once the pair count changes by fewer than this.
    max_outer_per_level, max_outer : int
        Safety caps: halve ``a_memb`` anyway after this many outer iterations at one level;
        stop after ``max_outer`` outer iterations in all.
    max_inner : int
        Cap on inner (CG) iterations per outer iteration.
    reference : {"level", "initial"}
        What the membrane measures the deformation against (see the module docstring).
    anchor : float
        Weight of ``|v - v_ref|^2`` (per vertex), keeps the system definite.
    refactor_fraction : float
        Refactorise the preconditioner when more than this fraction of vertices changed
        matched/unmatched state since the last factorisation.
    refactor_ratio : float
        ... or when ``a_memb`` differs from the factorised one by more than this factor (the
        LU of a twice stiffer system still preconditions well: condition number <= 2).
    workers : int
        Threads of the KD-tree queries (-1: all cores).
    outlier_mm, outlier_neighbours : float, int
        Correspondence-phase consistency test (see the module docstring).
    corr_normal_test : bool
        Apply the ``max_normal_deg`` normal test in the correspondence phase too.
    corr_max_normal_deg : float or None
        Otherwise, the looser normal test of the correspondence phase (None: none).
    switch : {"close", "spec", "never"}
        Rule for switching to Euclidean matching (see the module docstring).
    switch_quantile : float
        Quantile of the pair distances that must be within ``max_pair_mm`` (``"close"``).
    w_landmark : float
        Weight of the landmark reprojection term (per crop pixel^2 and unit reliability; 0: the
        dense-only fit, landmarks ignored).
    landmark_huber_px : float
        Residual (crop pixels) beyond which a landmark's weight falls off as 1 / residual.
    landmark_min_cos : float
        Landmarks whose surface normal is turned further than ``acos`` of this from the
        direction to the camera are dropped in that iteration.
    w_landmark_affine : float
        Weight per unit reliability of a landmark pair in the affine initialisation (the
        pipeline lifts the detected points onto the predicted geometry; 0: correspondences only).
    w_landmark_depth : float
        Weight (per mm^2 and unit reliability) of the detector's depth of each landmark, scale
        and shift fitted per face (``LandmarkTerm.depth_mm``; 0: not used).
    landmark_depth_huber_mm : float
        Depth residual (mm) beyond which that weight falls off as 1 / residual.
    landmark_contour_scale : float
        Factor on the weights of the landmarks on the face's outline (``LandmarkTerm.contour``:
        MediaPipe's face oval; 0 drops them, the networks' mask alone then decides the outline).
    w_landmark_camera : float
        Share of the landmarks in the camera recovery (the pipeline refits the crop's pinhole
        camera after the affine stage from the predicted geometry's pixels and the affinely
        placed template's landmark points at the detected points; the landmarks weigh this
        much of all the pixels together; 0: the camera from the maps alone).
    landmark_last_levels : int
        Number of final stiffness levels (``a_memb < a_memb_stop * 2**landmark_last_levels``;
        ``a_memb`` halves from level to level) in which the landmark terms are scaled by
        ``landmark_last_scale`` (0: none, the landmarks act to the end).
    landmark_last_scale : float
        Factor on ``w_landmark`` and ``w_landmark_depth`` in those levels (0: off, the dense
        terms alone have the last word on the shape).
    """

    w_point: float = 0.1
    w_plane: float = 1.0
    a_memb_start: float = 1e8
    a_memb_stop: float = 1e6
    membrane_scale: float = 1e-6
    max_pair_mm: float = 1.0
    max_normal_deg: float = 5.0
    move_tol_mm: float = 0.1
    inner_tol_mm: float = 0.01
    switch_match_change: int = 500
    max_outer_per_level: int = 6
    max_outer: int = 60
    max_inner: int = 200
    reference: str = "level"
    anchor: float = 1e-6
    refactor_fraction: float = 0.02
    refactor_ratio: float = 3.0
    workers: int = -1
    outlier_mm: float = 5.0
    outlier_neighbours: int = 12
    corr_normal_test: bool = False
    corr_max_normal_deg: float | None = 60.0
    switch: str = "close"
    switch_quantile: float = 0.9
    w_landmark: float = 0.0
    landmark_huber_px: float = 2.0
    landmark_min_cos: float = 0.2
    w_landmark_affine: float = 0.0
    w_landmark_depth: float = 0.0
    landmark_depth_huber_mm: float = 2.0
    landmark_contour_scale: float = 1.0
    w_landmark_camera: float = 0.0
    landmark_last_levels: int = 0
    landmark_last_scale: float = 0.0

    def validate(self) -> None:
        for k in ("w_point", "w_plane", "a_memb_start", "a_memb_stop", "membrane_scale",
                  "max_pair_mm", "max_normal_deg", "move_tol_mm", "inner_tol_mm"):
            if not float(getattr(self, k)) > 0:
                raise ValueError(f"RegistrationParams.{k} must be positive, got {getattr(self, k)}")
        if self.switch not in ("close", "spec", "never"):
            raise ValueError(f"switch must be 'close', 'spec' or 'never', got {self.switch!r}")
        if not 0 < self.switch_quantile <= 1:
            raise ValueError(f"switch_quantile must be in (0, 1], got {self.switch_quantile}")
        if self.reference not in ("level", "initial"):
            raise ValueError(f"reference must be 'level' or 'initial', got {self.reference!r}")
        if self.anchor < 0 or self.max_inner < 1 or self.max_outer < 1:
            raise ValueError("anchor must be >= 0, max_inner and max_outer >= 1")
        if self.w_landmark < 0 or not self.landmark_huber_px > 0 or not -1 <= self.landmark_min_cos <= 1:
            raise ValueError("w_landmark must be >= 0, landmark_huber_px > 0, landmark_min_cos in [-1, 1]")
        if min(self.w_landmark_depth, self.landmark_contour_scale, self.w_landmark_camera) < 0 \
                or not self.landmark_depth_huber_mm > 0:
            raise ValueError("w_landmark_depth, landmark_contour_scale and w_landmark_camera must be >= 0, "
                             "landmark_depth_huber_mm > 0")
        if self.landmark_last_levels < 0 or self.landmark_last_scale < 0:
            raise ValueError("landmark_last_levels and landmark_last_scale must be >= 0")

    def landmark_scale(self, a_memb: float) -> float:
        """Factor on the landmark terms at stiffness ``a_memb`` (``landmark_last_*``)."""
        if self.landmark_last_levels > 0 and a_memb < self.a_memb_stop * 2.0 ** self.landmark_last_levels:
            return float(self.landmark_last_scale)
        return 1.0


# The landmark-guided fit of the pipeline (weights chosen on validation renders:
# docs/reference/landmarks.md); ``RegistrationParams()`` is the paper's dense-only fit.
LANDMARK_PARAMS = RegistrationParams(w_landmark=0.5, w_landmark_affine=3.0)
# ... with the detector's depth as a weak term (measured beside it, not the default)
LANDMARK_DEPTH_PARAMS = replace(LANDMARK_PARAMS, w_landmark_depth=0.1)


@dataclass
class RegistrationResult:
    """Output of :func:`register`.

    Attributes
    ----------
    vertices : (V, 3) float64
        Registered template vertices, mm, label frame (template vertex order).
    matched : (V,) bool
        Template vertices with a pair in the last outer iteration.
    n_outer : int
        Outer iterations.
    n_solves : int
        Inner iterations (one preconditioner back-substitution for 3 coordinates each).
    n_factorizations : int
        Sparse LU factorisations of the V x V preconditioner.
    switch_iteration : int or None
        Outer iteration at which matching became Euclidean.
    a_memb : float
        Membrane weight at the end.
    records : list of dict
        Per outer iteration (only with ``return_records=True``): ``iteration``, ``a_memb``,
        ``phase``, ``n_pairs``, ``moved_mm``, ``n_inner``, ``refactorized``, ``landmarks`` (a
        landmark term was in the quadratic), ``landmark_scale``, ``vertices``.
    """

    vertices: np.ndarray
    matched: np.ndarray
    n_outer: int
    n_solves: int
    n_factorizations: int
    switch_iteration: int | None
    a_memb: float
    records: list = field(default_factory=list)


def _neighbours(points: np.ndarray, k: int, workers: int) -> np.ndarray | None:
    """(P, k) indices of each point's ``k`` nearest points (itself included), or None."""
    k = min(int(k), len(points))
    if k < 3:
        return None
    return cKDTree(points).query(points, k=k, workers=workers)[1]


def _consistent(nb: np.ndarray | None, disp: np.ndarray, gate_mm: float) -> np.ndarray:
    """(P,) bool: pairs whose displacement is within ``gate_mm`` of the median displacement of
    their neighbours ``nb`` (P, k)."""
    if nb is None:
        return np.ones(len(disp), dtype=bool)
    med = np.median(disp[nb], axis=1)
    return np.linalg.norm(disp - med, axis=1) <= gate_mm


def triangulate(faces) -> np.ndarray:
    """(T, 3) int64 triangles of a (F, 3) or -1-padded (F, 4) polygon array (quads split 0-2)."""
    f = np.asanyarray(faces)
    if f.ndim != 2 or f.shape[1] not in (3, 4):
        raise ValueError(f"faces must be (F, 3) or (F, 4), got {f.shape}")
    f = f.astype(np.int64)
    if f.shape[1] == 3:
        return f
    quad = f[:, 3] >= 0
    return np.concatenate([f[:, [0, 1, 2]], f[quad][:, [0, 2, 3]]], axis=0)


class _Solver:
    """Inner loop: PCG on (a L (x) I3 + D + anchor I) v = b with a V x V LU preconditioner."""

    def __init__(self, L: sp.csr_matrix, params: RegistrationParams):
        self.L = L
        self.p = params
        self.lu: sla.SuperLU | None = None
        self.lu_key: float | None = None
        self.lu_mask: np.ndarray | None = None
        self.n_fact = 0
        self.n_solves = 0

    def _factor(self, a_eff: float, mask: np.ndarray):
        p = self.p
        d = mask * (p.w_point + p.w_plane / 3.0) + p.anchor
        P = (a_eff * self.L + sp.diags(d)).tocsc()
        self.lu = sla.splu(P, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options=dict(SymmetricMode=True))
        self.lu_key = a_eff
        self.lu_mask = mask.copy()
        self.n_fact += 1

    def solve(self, a_eff, idx, c, n, v_ref, x0, lm=None):
        """``lm``: (B (K, V), M (K, 3, 3), g (K, 3)) adds ``sum p^T M p - 2 g . p``, ``p = B v``."""
        p = self.p
        V = len(x0)
        mask = np.zeros(V, dtype=bool)
        mask[idx] = True
        refactor = (self.lu is None or self.lu_key is None
                    or not (1.0 / p.refactor_ratio <= a_eff / self.lu_key <= p.refactor_ratio)
                    or np.count_nonzero(mask != self.lu_mask) > p.refactor_fraction * V)
        if refactor:
            self._factor(a_eff, mask)
        L = self.L
        lu = self.lu
        assert lu is not None

        def D(x):  # data + anchor blocks
            out = p.anchor * x
            xi = x[idx]
            out[idx] += p.w_point * xi + p.w_plane * n * np.einsum("ij,ij->i", n, xi)[:, None]
            if lm is not None:
                out += lm[0].T @ np.einsum("kij,kj->ki", lm[1], lm[0] @ x)
            return out

        def H(x):
            return a_eff * (L @ x) + D(x)

        b = a_eff * (L @ v_ref) + p.anchor * v_ref
        b[idx] += p.w_point * c + p.w_plane * n * np.einsum("ij,ij->i", n, c)[:, None]
        if lm is not None:
            b += lm[0].T @ lm[2]
        x = x0.copy()
        r = b - H(x)
        z = lu.solve(r)
        self.n_solves += 1
        q = z.copy()
        rz = float((r * z).sum())
        it = 0
        tol2 = p.inner_tol_mm ** 2
        while it < p.max_inner:
            it += 1
            Hq = H(q)
            qHq = float((q * Hq).sum())
            if not qHq > 0:
                break
            alpha = rz / qHq
            step = alpha * q
            x += step
            if ((step ** 2).sum(axis=1).max() < tol2):
                break
            r -= alpha * Hq
            z = lu.solve(r)
            self.n_solves += 1
            rz_new = float((r * z).sum())
            q = z + (rz_new / rz) * q
            rz = rz_new
        return x, it, refactor


def _landmark_quadratic(term: LandmarkTerm | None, p: RegistrationParams, v: np.ndarray,
                        normals: np.ndarray, scale: float = 1.0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None:
    """``(B, M, g)`` of the landmark terms linearised at ``v`` (``normals``: the template's at
    ``v``, out of the face), their weights times ``scale``, or None when there are none."""
    if scale != 1.0:
        p = replace(p, w_landmark=p.w_landmark * scale, w_landmark_depth=p.w_landmark_depth * scale)
    use_depth = p.w_landmark_depth > 0 and term is not None and term.depth_mm is not None
    if term is None or not (p.w_landmark > 0 or use_depth):
        return None
    vis = term.visible(v, normals, p.landmark_min_cos)
    m = np.zeros((term.B.shape[0], 3, 3))
    g = np.zeros((term.B.shape[0], 3))
    if p.w_landmark > 0:
        m, g = term.linearize(v, p.w_landmark * term.robust_weights(v, normals, p.landmark_huber_px,
                                                                    p.landmark_min_cos, visible=vis))
    if use_depth:
        md, gd = term.linearize_depth(p.w_landmark_depth * term.depth_weights(v, vis, p.landmark_depth_huber_mm))
        m, g = m + md, g + gd
    return term.B, m, g


def register(
    template_mm,
    template_faces,
    template_canon,
    target: TargetMesh,
    params: RegistrationParams | None = None,
    corr_scale_mm=None,
    return_records: bool = False,
    landmarks: LandmarkTerm | None = None,
) -> RegistrationResult:
    """Register the template to the target mesh (non-rigid ICP, see the module docstring).

    Parameters
    ----------
    template_mm : (V, 3) float
        Template vertices, mm, already in the label frame (e.g. after :func:`fit_affine_ransac`).
    template_faces : (F, 3) or (F, 4) int
        Template polygons (quads padded with -1 are split along their 0-2 diagonal).
    template_canon : (V, 3) float
        Canonical coordinates in [0, 1] of the template vertices.
    target : TargetMesh
        Label frame, mm; never modified.
    params : RegistrationParams, optional
        Schedule and weights (defaults: the supplement's).
    corr_scale_mm : (3,) float, optional
        mm per correspondence unit per axis; defaults to the ICT-FaceKit template's.
    return_records : bool
        Keep every outer iteration's record (with a copy of the vertices) for tuning.
    landmarks : LandmarkTerm, optional
        Detected landmarks and their template points; used when ``params.w_landmark > 0``.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    ValueError
        On bad shapes or parameters, or if no template vertex finds a pair at the start.
    """
    p = params or RegistrationParams()
    p.validate()
    tris = triangulate(template_faces)
    v0, tris = check_mesh(template_mm, tris, "template")
    canon = np.asanyarray(template_canon, dtype=np.float64)
    if canon.shape != v0.shape:
        raise ValueError(f"template_canon must be {v0.shape}, got {canon.shape}")
    if not isinstance(target, TargetMesh):
        raise ValueError("target must be a TargetMesh (build_target_mesh)")
    scale = _check_scale(corr_scale_mm)
    V = len(v0)

    L = cotangent_laplacian(v0, tris)
    solver = _Solver(L, p)
    tgt_v = np.asarray(target.vertices)
    tgt_n = np.asarray(target.normals)
    corr_tree = cKDTree(np.asarray(target.corr) * scale)
    d_corr, j_corr = corr_tree.query(canon * scale, k=1, distance_upper_bound=p.max_pair_mm,
                                     workers=p.workers)
    corr_ok = np.isfinite(d_corr)
    if not corr_ok.any():
        raise ValueError("no template vertex has a correspondence within "
                         f"{p.max_pair_mm} mm; is the target a face seen by the network?")
    euclid_tree = None
    corr_nb = None  # neighbours of the (fixed) correspondence pairs in canonical space
    corr_ok_pairs = None  # their consistency test, evaluated at the start of each level

    # orientation of the template normals relative to the target's (towards the camera)
    n_t = vertex_normals(v0, tris)
    i0 = np.flatnonzero(corr_ok)
    sign = 1.0 if np.einsum("ij,ij->", n_t[i0], tgt_n[j_corr[i0]]) >= 0 else -1.0
    cos_max = np.cos(np.deg2rad(p.max_normal_deg))
    if landmarks is not None and landmarks.contour is not None and p.landmark_contour_scale != 1.0:
        landmarks = replace(landmarks, weights=np.where(landmarks.contour, p.landmark_contour_scale, 1.0)
                            * landmarks.weights)

    v = v0.copy()
    v_ref = v0.copy()
    a = float(p.a_memb_start)
    phase = "corr"
    switch_it = None
    prev_pairs = None
    at_level = 0
    records = []
    matched = np.zeros(V, dtype=bool)
    it = 0
    while a >= p.a_memb_stop and it < p.max_outer:
        it += 1
        # (1) match
        if phase == "corr":
            i = np.flatnonzero(corr_ok)
            j = j_corr[i]
        else:
            if euclid_tree is None:
                euclid_tree = cKDTree(tgt_v)
            d, jj = euclid_tree.query(v, k=1, distance_upper_bound=p.max_pair_mm,
                                      workers=p.workers)
            i = np.flatnonzero(np.isfinite(d))
            j = jj[i]
        # (2) prune by normals (distances were gated by the queries)
        n_t = sign * vertex_normals(v, tris)
        ndot = np.einsum("ij,ij->i", n_t[i], tgt_n[j])
        if phase == "corr":
            r = np.linalg.norm(v[i] - tgt_v[j], axis=1)
            if corr_nb is None:
                corr_nb = _neighbours(canon[i] * scale, p.outlier_neighbours, p.workers)
            if at_level == 0 or corr_ok_pairs is None:  # once per stiffness level
                corr_ok_pairs = _consistent(corr_nb, tgt_v[j] - v[i], p.outlier_mm)
            keep = corr_ok_pairs.copy()
            if p.corr_normal_test:
                keep &= ndot >= cos_max
            elif p.corr_max_normal_deg is not None:
                keep &= ndot >= np.cos(np.deg2rad(p.corr_max_normal_deg))
            close = float(np.quantile(r[keep], p.switch_quantile)) if keep.any() else np.inf
        else:
            keep = ndot >= cos_max
            close = 0.0
        i, j = i[keep], j[keep]
        matched[:] = False
        matched[i] = True
        # (3) solve
        a_eff = a * p.membrane_scale
        lm_scale = p.landmark_scale(a)
        lm = _landmark_quadratic(landmarks, p, v, n_t, lm_scale)
        v_new, n_inner, refac = solver.solve(a_eff, i, tgt_v[j], tgt_n[j], v_ref, v, lm)
        moved = float(np.sqrt(((v_new - v) ** 2).sum(axis=1).max()))
        v = v_new
        at_level += 1
        if return_records:
            records.append(dict(iteration=it, a_memb=a, phase=phase, n_pairs=int(len(i)),
                                moved_mm=moved, pair_quantile_mm=close, n_inner=n_inner,
                                refactorized=bool(refac), landmarks=lm is not None, landmark_scale=lm_scale,
                                vertices=v.copy()))
        # (4) schedule
        count = len(i)
        if phase == "corr" and p.switch != "never" and prev_pairs is not None and \
                abs(count - prev_pairs) < p.switch_match_change and \
                (p.switch == "spec" or close <= p.max_pair_mm):
            phase = "euclid"
            switch_it = it
        prev_pairs = count
        if moved < p.move_tol_mm or at_level >= p.max_outer_per_level:
            a *= 0.5
            at_level = 0
            if p.reference == "level":
                v_ref = v.copy()
    return RegistrationResult(vertices=v, matched=matched, n_outer=it, n_solves=solver.n_solves,
                              n_factorizations=solver.n_fact, switch_iteration=switch_it,
                              a_memb=a, records=records)
