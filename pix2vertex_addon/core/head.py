"""A rig-ready full head from a reconstructed face (no ``bpy``).

1. :func:`fit_head` fits ICT-FaceKit's identity (100) and expression (53) weights to the
   reconstructed face region: robust (Tukey-reweighted), regularised least squares with the
   expression weights bounded to [0, 1], alternated with a rigid re-alignment; the rigid (skull)
   vertices and the reliable inner face weigh most.
2. :func:`build_head` assembles the head in the reconstruction's frame (model axes, mm):
   the reconstructed face (neutralised: minus the fitted expression deltas) replaces the face
   region exactly, in the same vertex order; the rest of the skin (back of the head, neck, ears,
   mouth and eye sockets) is the fitted neutral model plus a harmonic extension of the offset
   between the reconstruction and the fitted model, so the seam has neither crack nor step; the
   eyeballs, teeth, gums and tongue are the fitted model moved rigidly by the mean offset of their
   sockets, and each eyeball is then moved back until no lid goes deeper into it than in the
   fitted model itself, at any expression shape. ICT's see-through overlays (lacrimal fluid, eye blend, eye occlusion) and the eyelash
   cards are left out.
3. Shape keys: ``Photo expression`` (the fitted expression, which brings back the photo: face
   region exactly the reconstruction) and the ARKit blendshapes built from ICT's expression shapes
   (:data:`ARKIT_FROM_ICT`), applied to the whole head, eyes and teeth included; the
   ``eyeLook*`` keys also turn the eyeball (:data:`GAZE_DEG`), which ICT's shapes do not.

Units: millimetres, model axes (+x the face's left, +y up, +z out of the face).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from .camera import rigid_fit
from .face_model import FaceModel

__all__ = [
    "ARKIT_FROM_ICT",
    "ARKIT_NAMES",
    "GAZE_DEG",
    "HEAD_MATERIALS",
    "PHOTO_EXPRESSION",
    "Head",
    "HeadFit",
    "build_head",
    "eyelid_depth",
    "eyelid_depths",
    "fit_head",
    "harmonic_extension",
    "neutralised_face",
    "polygon_edges_count",
    "shape_reach",
    "sphere_fit",
]

CM_TO_MM = 10.0
PHOTO_EXPRESSION = "Photo expression"

# ARKit blendshape name -> the ICT-FaceKit expression shapes summed to make it. ICT's ``_L`` moves
# the +x side, the face's own left, which is the side ARKit calls ``Left`` (ARKit's face frame also
# has +x on the face's own left). ICT splits browInnerUp and cheekPuff into _L/_R: the ARKit shape
# is their sum. ICT has no tongue shape: tongueOut has no source and is not created.
ARKIT_FROM_ICT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("eyeBlinkLeft", ("eyeBlink_L",)),
    ("eyeLookDownLeft", ("eyeLookDown_L",)),
    ("eyeLookInLeft", ("eyeLookIn_L",)),
    ("eyeLookOutLeft", ("eyeLookOut_L",)),
    ("eyeLookUpLeft", ("eyeLookUp_L",)),
    ("eyeSquintLeft", ("eyeSquint_L",)),
    ("eyeWideLeft", ("eyeWide_L",)),
    ("eyeBlinkRight", ("eyeBlink_R",)),
    ("eyeLookDownRight", ("eyeLookDown_R",)),
    ("eyeLookInRight", ("eyeLookIn_R",)),
    ("eyeLookOutRight", ("eyeLookOut_R",)),
    ("eyeLookUpRight", ("eyeLookUp_R",)),
    ("eyeSquintRight", ("eyeSquint_R",)),
    ("eyeWideRight", ("eyeWide_R",)),
    ("jawForward", ("jawForward",)),
    ("jawLeft", ("jawLeft",)),
    ("jawRight", ("jawRight",)),
    ("jawOpen", ("jawOpen",)),
    ("mouthClose", ("mouthClose",)),
    ("mouthFunnel", ("mouthFunnel",)),
    ("mouthPucker", ("mouthPucker",)),
    ("mouthLeft", ("mouthLeft",)),
    ("mouthRight", ("mouthRight",)),
    ("mouthSmileLeft", ("mouthSmile_L",)),
    ("mouthSmileRight", ("mouthSmile_R",)),
    ("mouthFrownLeft", ("mouthFrown_L",)),
    ("mouthFrownRight", ("mouthFrown_R",)),
    ("mouthDimpleLeft", ("mouthDimple_L",)),
    ("mouthDimpleRight", ("mouthDimple_R",)),
    ("mouthStretchLeft", ("mouthStretch_L",)),
    ("mouthStretchRight", ("mouthStretch_R",)),
    ("mouthRollLower", ("mouthRollLower",)),
    ("mouthRollUpper", ("mouthRollUpper",)),
    ("mouthShrugLower", ("mouthShrugLower",)),
    ("mouthShrugUpper", ("mouthShrugUpper",)),
    ("mouthPressLeft", ("mouthPress_L",)),
    ("mouthPressRight", ("mouthPress_R",)),
    ("mouthLowerDownLeft", ("mouthLowerDown_L",)),
    ("mouthLowerDownRight", ("mouthLowerDown_R",)),
    ("mouthUpperUpLeft", ("mouthUpperUp_L",)),
    ("mouthUpperUpRight", ("mouthUpperUp_R",)),
    ("browDownLeft", ("browDown_L",)),
    ("browDownRight", ("browDown_R",)),
    ("browInnerUp", ("browInnerUp_L", "browInnerUp_R")),
    ("browOuterUpLeft", ("browOuterUp_L",)),
    ("browOuterUpRight", ("browOuterUp_R",)),
    ("cheekPuff", ("cheekPuff_L", "cheekPuff_R")),
    ("cheekSquintLeft", ("cheekSquint_L",)),
    ("cheekSquintRight", ("cheekSquint_R",)),
    ("noseSneerLeft", ("noseSneer_L",)),
    ("noseSneerRight", ("noseSneer_R",)),
    ("tongueOut", ()),
)
# The ARKit shapes the head gets (every ARKit name with an ICT source: 51 of ARKit's 52).
ARKIT_NAMES: tuple[str, ...] = tuple(a for a, src in ARKIT_FROM_ICT if src)

# Head parts: ICT regions kept (a prefix of the vertex order: face .. eyeballs) and materials.
HEAD_MATERIALS: tuple[str, ...] = ("face", "skin", "scalp", "mouth", "gums", "teeth", "sclera", "iris", "pupil")
# The scalp: head skin above a hairline HAIRLINE_CM above the brows over the forehead and the
# temples, falling to 3 cm below the brows behind the ears (the synthetic faces' painted hairline).
HAIRLINE_CM = 5.0
# ICT's eyeball is two nested spheres textured by ICT's eye textures; without them the outer
# sphere's polygons are coloured by their angle from the eye's axis (+z in the neutral model):
# iris within 33 degrees (an 11-12 mm iris on a 12 mm eyeball), pupil within 13 degrees.
IRIS_HALF_ANGLE_DEG, PUPIL_HALF_ANGLE_DEG = 33.0, 13.0
_SKIN_REGIONS = ("head_and_neck", "mouth_socket", "eye_socket_left", "eye_socket_right")
_LAST_KEPT_REGION = "eyeball_right"
_REGION_MATERIAL = {
    "face": "face", "head_and_neck": "skin", "mouth_socket": "mouth", "eye_socket_left": "mouth",
    "eye_socket_right": "mouth", "gums_and_tongue": "gums", "teeth": "teeth", "sclera_left": "sclera",
    "sclera_right": "sclera", "iris_left": "iris", "iris_right": "iris",
}
# Rigid parts moved by the mean offset of a socket: (part regions, socket region)
_RIGID_PARTS = (
    (("eyeball_left",), "eye_socket_left"),
    (("eyeball_right",), "eye_socket_right"),
    (("teeth", "gums_and_tongue"), "mouth_socket"),
)


@dataclass(frozen=True)
class HeadFit:
    """ICT weights fitted to a reconstructed face.

    identity : (100,) weights (~N(0, 1)); expression : (53,) weights in [0, 1] (ICT order).
    rotation, translation : the model frame -> the reconstruction's frame
        (``reconstruction ~ rotation @ model_mm + translation``).
    rms_mm : weighted RMS distance of the fitted face to the reconstruction (inliers).
    """

    identity: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    rms_mm: float

    def expression_dict(self, names: list[str], min_weight: float = 0.01) -> dict[str, float]:
        return {n: round(float(w), 4) for n, w in zip(names, self.expression) if w >= min_weight}


@dataclass
class Head:
    """The assembled head (mm, the reconstruction's frame, model axes).

    vertices : (N, 3) the neutral ``Basis``; vertices ``0 .. face_count-1`` are the face region
        in the template's order. faces : (F, 4) polygons (-1 pads triangles);
    corner_uvs : (F, 4, 2) ICT's UVs (NaN on padding); material : (F,) index into
        :data:`HEAD_MATERIALS`. shape_keys : name -> (N, 3) deltas from the Basis, in order
        (``Photo expression`` first, then the ARKit shapes).
    """

    vertices: np.ndarray
    faces: np.ndarray
    corner_uvs: np.ndarray
    material: np.ndarray
    face_count: int
    fit: HeadFit
    shape_keys: dict[str, np.ndarray] = field(default_factory=dict)
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def shaped(self, weights: dict[str, float]) -> np.ndarray:
        """(N, 3) vertices with shape keys mixed in at ``weights``."""
        v = self.vertices.copy()
        for name, w in weights.items():
            v += w * self.shape_keys[name]
        return v

    def triangles(self) -> np.ndarray:
        f = self.faces
        quad = f[:, 3] >= 0
        return np.concatenate([f[:, [0, 1, 2]], f[quad][:, [0, 2, 3]]])


# -- fitting ---------------------------------------------------------------------------------------
def _vertex_weights(model: FaceModel, n_face: int) -> np.ndarray:
    """Per-vertex data weights on the face region: rigid > inner face > outer face."""
    w = np.full(n_face, 0.25)
    w[model.region_slice("narrow_face")] = 1.0
    rigid = model.rigid_vertices[model.rigid_vertices < n_face]
    w[rigid] = 3.0
    return w


def _rotation_vector(w: np.ndarray) -> np.ndarray:
    """Rotation matrix of the rotation vector ``w`` (Rodrigues)."""
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * kx @ kx


def box_qp(gram: np.ndarray, q: np.ndarray, lb: np.ndarray, ub: np.ndarray, tol: float = 1e-9,
           max_iter: int = 60) -> np.ndarray:
    """argmin 0.5 x^T G x - q^T x subject to lb <= x <= ub (G symmetric positive definite).

    Block principal pivoting (Judice and Pires; Kim and Park's rule against cycling): every
    variable is free or held at a bound; each step solves the free ones exactly (one Cholesky of
    their block) and moves every variable that breaks the optimality conditions (a free one past
    its bound, a held one whose gradient pushes it inside) at once, falling back to moving only
    the last of them when that stops reducing their number. Bounded least squares of the size of
    the head fit (159 unknowns) settles in a few steps; SciPy's BVLS, one variable per step, took
    about a hundred. Falls back to BVLS if it does not settle.
    """
    g = np.asarray(gram, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    n = len(q)
    x = np.linalg.solve(g, q)
    state = np.where(x < lb, -1, np.where(x > ub, 1, 0))  # -1 at lb, 1 at ub, 0 free
    best, backup = n + 1, 3
    scale = tol * max(1.0, float(np.abs(q).max()))
    for _ in range(max_iter):
        free = state == 0
        x = np.where(state < 0, lb, np.where(state > 0, ub, 0.0))
        if free.any():
            held = ~free
            r = q[free] - g[np.ix_(free, held)] @ x[held] if held.any() else q[free]
            x[free] = np.linalg.solve(g[np.ix_(free, free)], r)
        grad = g @ x - q
        bad = (free & ((x < lb - tol) | (x > ub + tol))) | ((state < 0) & (grad < -scale)) \
            | ((state > 0) & (grad > scale))
        nbad = int(bad.sum())
        if nbad == 0:
            return np.clip(x, lb, ub)
        if nbad < best:
            best, backup = nbad, 3
            move = bad
        elif backup > 0:
            backup -= 1
            move = bad
        else:  # the single-variable rule: only the last offending variable moves
            move = np.zeros(n, dtype=bool)
            move[np.flatnonzero(bad)[-1]] = True
        flip_free = move & free
        state[flip_free & (x < lb)] = -1
        state[flip_free & (x > ub)] = 1
        state[move & ~free] = 0
    from scipy.optimize import lsq_linear

    u = np.linalg.cholesky(g).T
    return lsq_linear(u, np.linalg.solve(u.T, q), bounds=(lb, ub), method="bvls").x


def _fit_basis(model: FaceModel) -> np.ndarray:
    """(3n, k) float32: the identity then the expression basis over the face region, in mm,
    one column per shape (x, y, z of each vertex in turn); kept on the model (17 MB)."""
    b = model.__dict__.get("_head_fit_basis")
    if b is None:
        s = model.region_slice("face")
        n = s.stop - s.start
        parts = (model.identity_basis[:, s], model.expression_basis[:, s])
        b = np.concatenate([p.reshape(len(p), 3 * n) for p in parts]).T * np.float32(CM_TO_MM)
        b = np.ascontiguousarray(b, dtype=np.float32)
        b.setflags(write=False)
        model.__dict__["_head_fit_basis"] = b
    return b


def fit_head(model: FaceModel, face_mm: np.ndarray, iterations: int = 6, identity_prior: float = 2.0,
             expression_prior: float = 0.5, bounds_sigma: float = 4.0, expression_l1: float = 0.0) -> HeadFit:
    """Fit identity and expression weights (and a rigid alignment) to a reconstructed face.

    face_mm : (9409, 3) the face region in the template's vertex order, mm, model axes (the
        pipeline's ``vertices_model``).
    identity_prior, expression_prior : mm^2 penalties on the squared weights (a Gaussian prior on
        identity; a small ridge on expression, whose weights are also bounded to [0, 1]).
    expression_l1 : mm^2 penalty on the sum of the expression weights (sparsity; off by default:
        docs/reference/head.md).
    Each iteration solves the weights and a small rigid motion together (Gauss-Newton on the
    rotation), so the rigid part cannot drift into the identity. Robust: after each solve,
    vertices farther than 3 x the median residual are down-weighted (Tukey's biweight).
    """
    s = model.region_slice("face")
    n = s.stop - s.start
    y = np.asarray(face_mm, dtype=np.float64)
    if y.shape != (n, 3) or not np.isfinite(y).all():
        raise ValueError(f"the face must be ({n}, 3) finite vertices in mm, got {y.shape}")
    mean = model.neutral_vertices[s].astype(np.float64) * CM_TO_MM
    nid = model.identity_basis.shape[0]
    nex = model.expression_basis.shape[0]
    basis = _fit_basis(model)  # (3n, k) float32, mm
    k = nid + nex
    prior = np.concatenate([np.full(nid, identity_prior), np.full(nex, expression_prior), np.full(6, 1e-6)])
    lb = np.concatenate([np.full(nid, -bounds_sigma), np.zeros(nex), np.full(6, -np.inf)])
    ub = np.concatenate([np.full(nid, bounds_sigma), np.ones(nex), np.full(6, np.inf)])
    w_base = _vertex_weights(model, n)
    robust = np.ones(n)
    rot, t = rigid_fit(mean, y, w_base)
    x = np.zeros(k)
    fitted = mean
    centre = mean.mean(axis=0)
    motion = np.zeros((3 * n, 6))  # translation, then d(w x p)/dw = -[p]x
    motion[0::3, 0] = motion[1::3, 1] = motion[2::3, 2] = 1.0
    weighted = np.empty_like(basis)
    gram = np.empty((k + 6, k + 6))
    for _ in range(iterations):
        local = (y - t) @ rot  # reconstruction in the model frame
        p = fitted - centre
        motion[0::3, 4], motion[0::3, 5] = p[:, 2], -p[:, 1]
        motion[1::3, 3], motion[1::3, 5] = -p[:, 2], p[:, 0]
        motion[2::3, 3], motion[2::3, 4] = p[:, 1], -p[:, 0]
        wr = np.repeat(w_base * robust, 3)
        sw = np.sqrt(wr)
        # bounded least squares through its normal equations ((k + 6)^2, k = 153), the Gram
        # matrix by blocks; the basis block in float32 (half the time; its rounding moves the
        # fit by about a micrometre)
        np.multiply(basis, sw.astype(np.float32)[:, None], out=weighted)
        mw = motion * sw[:, None]
        gram[:k, :k] = weighted.T @ weighted
        gram[:k, k:] = weighted.T @ mw.astype(np.float32)
        gram[k:, :k] = gram[:k, k:].T
        gram[k:, k:] = mw.T @ mw
        res = (local - mean).ravel() * wr
        rhs = np.concatenate([basis.T @ res.astype(np.float32), motion.T @ res])
        rhs[nid:k] -= 0.5 * expression_l1
        sol = box_qp(gram + np.diag(prior), rhs, lb, ub)
        x = sol[:k]
        dt, dw = sol[k:k + 3], sol[k + 3:]
        # local ~ M + dt + dw x (M - c): fold the small motion into (rot, t)
        inc = _rotation_vector(dw)
        t = t + rot @ (centre + dt - inc @ centre)
        rot = rot @ inc
        fitted = mean + (basis @ x.astype(np.float32)).reshape(n, 3)
        r = np.linalg.norm(fitted @ rot.T + t - y, axis=1)
        c = 3.0 * max(float(np.median(r)), 0.3)
        robust = np.where(r < c, (1.0 - (r / c) ** 2) ** 2, 0.0)
    r = np.linalg.norm(fitted @ rot.T + t - y, axis=1)
    w = w_base * robust
    rms = float(np.sqrt((w * r**2).sum() / max(w.sum(), 1e-12)))
    return HeadFit(identity=x[:nid].copy(), expression=x[nid:].copy(), rotation=rot, translation=t, rms_mm=rms)


# -- assembly --------------------------------------------------------------------------------------
def _polygon_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) vertex pairs of every polygon side (padded polygons close at their first corner)."""
    rows, cols = [], []
    k = faces.shape[1]
    for i in range(k):
        a = faces[:, i]
        nxt = faces[:, (i + 1) % k]
        b = np.where(nxt >= 0, nxt, faces[:, 0])
        ok = (a >= 0) & (a != b)
        rows.append(a[ok])
        cols.append(b[ok])
    return np.concatenate(rows), np.concatenate(cols)


def _adjacency(faces: np.ndarray, n: int) -> sp.csr_matrix:
    r, c = _polygon_edges(faces)
    adj = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
    return ((adj + adj.T) > 0).astype(np.float64).tocsr()


def harmonic_extension(adjacency: sp.csr_matrix, known: np.ndarray, values: np.ndarray,
                       unknown: np.ndarray) -> np.ndarray:
    """Values at ``unknown`` vertices solving the graph Laplace equation with ``values`` fixed at
    ``known`` (each unknown vertex is the mean of its neighbours)."""
    deg = np.asarray(adjacency.sum(axis=1)).ravel()
    lap = sp.diags(deg) - adjacency
    l_uu = lap[unknown][:, unknown].tocsc()
    l_uk = lap[unknown][:, known]
    rhs = -(l_uk @ values)
    out = spsolve(l_uu, rhs)
    return np.asarray(out).reshape(len(unknown), -1)


def polygon_edges_count(faces: np.ndarray) -> dict[tuple[int, int], int]:
    """How many polygons use each (sorted) edge."""
    a, b = _polygon_edges(faces)
    pairs, counts = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0, return_counts=True)
    return {(int(u), int(v)): int(c) for (u, v), c in zip(pairs, counts)}


def _material_per_polygon(model: FaceModel, keep: np.ndarray) -> np.ndarray:
    """Each kept polygon's :data:`HEAD_MATERIALS` index from the region of its first non-face
    corner (polygons with every corner in the face region are ``face``, the photo texture);
    iris and pupil on the eyeballs' outer spheres."""
    faces = model.faces[keep].astype(np.int64)
    region_of = np.zeros(int(faces.max()) + 1, dtype=np.int64)
    names = [r for r in _REGION_MATERIAL if r in model.regions]
    for i, r in enumerate(names):
        a, b = model.regions[r]
        region_of[a:min(b, len(region_of))] = i
    n_face = model.regions["face"][1]
    corner = np.where(faces >= n_face, faces, -1).max(axis=1)  # a non-face corner, if any
    corner = np.where(corner >= 0, corner, faces[:, 0])
    idx = np.array([HEAD_MATERIALS.index(_REGION_MATERIAL[names[j]]) for j in region_of[corner]])
    v = model.neutral_vertices.astype(np.float64)
    skin = np.flatnonzero(idx == HEAD_MATERIALS.index("skin"))
    idx[skin[_above_hairline(model, np.array([v[p[p >= 0]].mean(axis=0) for p in faces[skin]]))]] = \
        HEAD_MATERIALS.index("scalp")
    for side in ("left", "right"):
        outer = slice(*model.regions[f"sclera_{side}"])
        c, _ = sphere_fit(v[outer])
        polys = np.flatnonzero((faces[:, 0] >= outer.start) & (faces[:, 0] < outer.stop))
        cen = np.array([v[p[p >= 0]].mean(axis=0) for p in faces[polys]]) - c
        angle = np.degrees(np.arccos(np.clip(cen[:, 2] / np.linalg.norm(cen, axis=1), -1.0, 1.0)))
        idx[polys[angle < IRIS_HALF_ANGLE_DEG]] = HEAD_MATERIALS.index("iris")
        idx[polys[angle < PUPIL_HALF_ANGLE_DEG]] = HEAD_MATERIALS.index("pupil")
    return idx.astype(np.int64)


def _above_hairline(model: FaceModel, points_cm: np.ndarray) -> np.ndarray:
    """(N,) bool: points of the neutral model (cm) above the scalp's hairline (:data:`HAIRLINE_CM`)."""
    lm = model.neutral_vertices[model.landmarks_68].astype(np.float64)
    height = points_cm[:, 1] - lm[17:27, 1].mean()  # above the brows
    behind = np.clip((lm[0, 2] - points_cm[:, 2]) / 3.0, 0.0, 1.0)  # behind the ears
    return height > HAIRLINE_CM - behind * (HAIRLINE_CM + 3.0)


def _socket_ring(model: FaceModel, vertices: np.ndarray, parts: tuple[str, ...], socket: str,
                 margin_mm: float = 4.0) -> np.ndarray:
    """The vertices a rigid part must follow: its socket region and the face-region vertices
    within ``margin_mm`` of the part's bounding sphere (the lids around an eyeball, the lips
    around the teeth)."""
    pv = np.concatenate([vertices[slice(*model.regions[p])] for p in parts])
    c = pv.mean(axis=0)
    r = float(np.linalg.norm(pv - c, axis=1).max())
    n_face = model.regions["face"][1]
    near = np.flatnonzero(np.linalg.norm(vertices[:n_face] - c, axis=1) < r + margin_mm)
    return np.concatenate([np.arange(*model.regions[socket]), near])


def sphere_fit(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere (centre, radius) through ``points`` (N, 3)."""
    a = np.c_[2.0 * points, np.ones(len(points))]
    x = np.linalg.lstsq(a, (points**2).sum(axis=1), rcond=None)[0]
    c = x[:3]
    return c, float(np.sqrt(x[3] + c @ c))


def eyelid_depth(vertices: np.ndarray, sclera: slice, n_face: int) -> float:
    """How deep (mm) the deepest face-region vertex lies inside the sphere of an eyeball's sclera
    (ICT's own lids rest about 1.3 mm inside it at the eye corners)."""
    c, r = sphere_fit(vertices[sclera])
    return float((r - np.linalg.norm(vertices[:n_face] - c, axis=1)).max())


def eyelid_depths(vertices: np.ndarray, shapes: np.ndarray, sclera: slice, n_face: int,
                  reach: np.ndarray | None = None) -> np.ndarray:
    """:func:`eyelid_depth` of ``vertices + shapes[i]`` for every shape (S, V, 3) at once (the
    sphere of each by its normal equations).

    reach : (n_face,) optional, how far any shape moves each face-region vertex
        (:func:`shape_reach`). With it only the vertices that could come near the spheres are
        measured, and the result is checked to be the one over all vertices (else they all are).
    """
    pts = vertices[sclera][None] + shapes[:, sclera]
    a = np.concatenate([2.0 * pts, np.ones(pts.shape[:2] + (1,))], axis=2)
    rhs = (pts**2).sum(axis=2)
    x = np.linalg.solve(np.einsum("sni,snj->sij", a, a), np.einsum("sni,sn->si", a, rhs))
    c = x[:, :3]
    r = np.sqrt(x[:, 3] + (c * c).sum(axis=1))
    face = vertices[:n_face]
    if reach is not None:
        # a vertex at least `lower` from c[0] under every shape is at least `lower - shift` from
        # each shape's centre: it cannot be deeper than `bound` when `lower` >= `far`
        shift = np.linalg.norm(c - c[0], axis=1)
        lower = np.linalg.norm(face - c[0], axis=1) - reach
        far = float(r.max() + shift.max()) + 2.0
        near = np.flatnonzero(lower < far)
        if near.size:
            dist = np.linalg.norm(face[near][None] + shapes[:, near] - c[:, None], axis=2)
            depth = (r[:, None] - dist).max(axis=1)
            if near.size == n_face or (depth >= r - far + shift).all():
                return depth
    dist = np.linalg.norm(face[None] + shapes[:, :n_face] - c[:, None], axis=2)
    return (r[:, None] - dist).max(axis=1)


def shape_reach(shapes: np.ndarray, n: int) -> np.ndarray:
    """(n,) the largest displacement of each of the first ``n`` vertices over ``shapes`` (S, V, 3)."""
    return np.sqrt(np.einsum("svi,svi->sv", shapes[:, :n], shapes[:, :n]).max(axis=0))


def _seat_eyeball(model: FaceModel, head_v: np.ndarray, fitted_v: np.ndarray, shapes: np.ndarray,
                  side: str, forward: np.ndarray, iterations: int = 4, reach: np.ndarray | None = None) -> float:
    """Move an eyeball back (along -``forward``) until, at the neutral shape and at every
    expression shape at weight 1, no lid vertex lies deeper inside it than in the fitted model
    itself (``shapes``: (S, V, 3), zeros (the neutral shape) then each shape at weight 1;
    ``reach``: their :func:`shape_reach` over the face region). Returns the distance moved (mm);
    ``head_v`` is changed in place."""
    eye = slice(*model.regions[f"eyeball_{side}"])
    sclera = slice(*model.regions[f"sclera_{side}"])
    n_face = model.regions["face"][1]
    ref = eyelid_depths(fitted_v, shapes, sclera, n_face, reach)
    moved = 0.0
    for _ in range(iterations):
        excess = float((eyelid_depths(head_v, shapes, sclera, n_face, reach) - ref).max())
        if excess <= 0.01:
            break
        head_v[eye] -= excess * forward
        moved += excess
    return moved


@dataclass
class _HeadLayout:
    """What the head's assembly takes from the model alone (kept on the model): the kept
    polygons, their UVs and materials, and the skin's harmonic extension factorised."""

    faces: np.ndarray
    corner_uvs: np.ndarray
    material: np.ndarray
    skin: np.ndarray
    _lu: Any  # scipy's SuperLU
    _l_uk: sp.csr_matrix

    def extend(self, face_values: np.ndarray) -> np.ndarray:
        """:func:`harmonic_extension` of ``face_values`` (n_face, C) to the skin vertices."""
        return np.asarray(self._lu.solve(-(self._l_uk @ face_values))).reshape(len(self.skin), -1)


def _head_layout(model: FaceModel) -> _HeadLayout:
    lay = model.__dict__.get("_head_layout")
    if lay is None:
        from scipy.sparse.linalg import splu

        n_face = model.regions["face"][1]
        n = model.regions[_LAST_KEPT_REGION][1]
        f = model.faces
        keep = np.flatnonzero((((f >= 0) & (f < n)) | (f < 0)).all(axis=1))
        faces = f[keep].astype(np.int64)
        adj = _adjacency(faces, n)
        skin = np.concatenate([np.arange(*model.regions[r]) for r in _SKIN_REGIONS])
        lap = sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj
        fuv = model.face_uvs[keep]
        uvs = np.where((fuv >= 0)[..., None], model.uv_coords[np.maximum(fuv, 0)], np.nan).astype(np.float32)
        lay = _HeadLayout(faces=faces, corner_uvs=uvs, material=_material_per_polygon(model, keep), skin=skin,
                          _lu=splu(lap[skin][:, skin].tocsc()), _l_uk=lap[skin][:, np.arange(n_face)].tocsr())
        for a in (faces, uvs, lay.material, skin):
            a.setflags(write=False)
        model.__dict__["_head_layout"] = lay
    return lay


def build_head(model: FaceModel, face_mm: np.ndarray, fit: HeadFit | None = None, arkit: bool = True,
               photo_expression: bool = True) -> Head:
    """The full head for a reconstructed face (see the module docstring).

    face_mm : (9409, 3) the reconstruction (``FaceReconstruction.vertices_model``), mm.
    fit : a :func:`fit_head` result (fitted here when None).
    """
    if fit is None:
        fit = fit_head(model, face_mm)
    y = np.asarray(face_mm, dtype=np.float64)
    n_face = model.regions["face"][1]
    n = model.regions[_LAST_KEPT_REGION][1]
    rot, t = fit.rotation, fit.translation
    nid = len(fit.identity)
    ident = model.neutral_vertices[:n].astype(np.float64) + np.tensordot(
        fit.identity, model.identity_basis[:nid, :n], axes=1)
    ident_mm = (ident * CM_TO_MM) @ rot.T + t  # fitted neutral person, reconstruction frame

    def delta(weights: np.ndarray) -> np.ndarray:
        nz = np.flatnonzero(weights)
        if not nz.size:
            return np.zeros((n, 3))
        d = np.tensordot(weights[nz], model.expression_basis[nz, :n], axes=1)
        return (d * CM_TO_MM) @ rot.T

    expr = delta(fit.expression)
    neutral_face = y - expr[:n_face]
    lay = _head_layout(model)
    faces, skin = lay.faces, lay.skin

    offset = np.zeros((n, 3))
    offset[:n_face] = neutral_face - ident_mm[:n_face]
    offset[skin] = lay.extend(offset[:n_face])
    for parts, socket in _RIGID_PARTS:
        shift = offset[_socket_ring(model, ident_mm, parts, socket)].mean(axis=0)
        for p in parts:
            offset[slice(*model.regions[p])] = shift
    basis_v = ident_mm + offset
    basis_v[:n_face] = neutral_face  # exact (the harmonic offset already equals it there)
    shapes = np.zeros((len(model.expression_basis) + 1, n, 3))  # neutral, then each shape at weight 1
    shapes[1:] = (model.expression_basis[:, :n].astype(np.float64) * CM_TO_MM) @ rot.T
    reach = shape_reach(shapes, n_face)
    for side in ("left", "right"):
        _seat_eyeball(model, basis_v, ident_mm, shapes, side, rot[:, 2], reach=reach)

    head = Head(vertices=basis_v, faces=faces, corner_uvs=lay.corner_uvs, material=lay.material,
                face_count=n_face, fit=fit,
                regions={k: (a, b) for k, (a, b) in model.regions.items() if b <= n})
    if photo_expression:
        head.shape_keys[PHOTO_EXPRESSION] = expr
    if arkit:
        for name, src in ARKIT_FROM_ICT:
            if src:
                w = np.zeros(len(model.expression_names))
                for s in src:
                    w[model.expression_names.index(s)] = 1.0
                head.shape_keys[name] = delta(w) + _gaze_delta(model, basis_v, name, rot)
    return head


# ICT's eyeLook shapes move the lids only (ICT turns the eyeballs separately); the ARKit keys also
# turn the eyeball about its centre by this angle at weight 1 (a shape key blends linearly, so at
# weight 0.5 the eyeball sits up to 0.4 mm deeper: inwards, never through the lids).
GAZE_DEG = 25.0
_GAZE_AXES = {  # direction -> (axis in the model frame, sign for the left eye, sign for the right)
    "Up": (0, -1.0, -1.0), "Down": (0, 1.0, 1.0), "In": (1, -1.0, 1.0), "Out": (1, 1.0, -1.0),
}


def _gaze_delta(model: FaceModel, vertices: np.ndarray, name: str, rot: np.ndarray) -> np.ndarray:
    """Deltas turning one eyeball for an ARKit ``eyeLook<Dir><Side>`` key (zero for other keys)."""
    out = np.zeros_like(vertices)
    if not name.startswith("eyeLook"):
        return out
    side = "left" if name.endswith("Left") else "right"
    direction = name[len("eyeLook"):-len("Left" if side == "left" else "Right")]
    axis, sign_l, sign_r = _GAZE_AXES[direction]
    w = np.zeros(3)
    w[axis] = np.radians(GAZE_DEG) * (sign_l if side == "left" else sign_r)
    turn = rot @ _rotation_vector(w) @ rot.T  # the model-frame rotation in the head's frame
    eye = slice(*model.regions[f"eyeball_{side}"])
    c, _ = sphere_fit(vertices[slice(*model.regions[f"sclera_{side}"])])
    out[eye] = (vertices[eye] - c) @ turn.T + c - vertices[eye]
    return out


def neutralised_face(head: Head) -> np.ndarray:
    """(9409, 3) the Basis face region: the reconstruction minus the fitted expression."""
    return head.vertices[: head.face_count]
