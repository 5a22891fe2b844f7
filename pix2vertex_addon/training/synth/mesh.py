"""The mesh the synthetic renderer draws, derived once per face model (no ``bpy``).

The render mesh is the ICT-FaceKit head without its transparent layers: face skin, back of the
head and neck, mouth and eye sockets, gums and tongue, teeth, scleras and irises. Its triangles
start with the face-region template triangles, in the order of ``Template.triangles()``, so a
rasterised triangle index ``t < n_face_tris`` is directly a template triangle (a label pixel).

Per-vertex masks (lips, brows, beard, cheeks, hairline height, ...) are computed on the neutral
mesh from the 68 landmarks and drive the procedural albedo in :mod:`.appearance`.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...core.correspondence import canonical_coordinates
from ...core.face_model import FaceModel

__all__ = ["RenderMesh", "render_mesh"]

# Part codes of render vertices.
SKIN, HEAD, MOUTH, EYE_SOCKET, GUMS, TEETH, SCLERA, IRIS = range(8)
_PART_REGIONS = {
    HEAD: ["head_and_neck"],
    MOUTH: ["mouth_socket"],
    EYE_SOCKET: ["eye_socket_left", "eye_socket_right"],
    GUMS: ["gums_and_tongue"],
    TEETH: ["teeth"],
    SCLERA: ["sclera_left", "sclera_right"],
    IRIS: ["iris_left", "iris_right"],
}
_RENDER_MATERIALS = ["M_Face", "M_BackHead", "M_GumsTongue", "M_Teeth",
                     "M_ScleraLeft", "M_IrisLeft", "M_ScleraRight", "M_IrisRight"]


@dataclass(frozen=True)
class RenderMesh:
    """Static data of the render mesh (all arrays read-only).

    Attributes
    ----------
    n_vertices : number of model vertices used (a prefix of the model's vertices).
    triangles : (T, 3) int64, face-region template triangles first.
    n_face_tris : number of template triangles at the start of ``triangles``.
    n_face_vertices : 9409, the face-region vertices (a prefix).
    part : (n_vertices,) int8 part code (SKIN, HEAD, MOUTH, ...).
    canon : (n_face_vertices, 3) float32 canonical coordinates (docs/reference/conventions.md).
    neutral_cm : (n_vertices, 3) float32 neutral positions (texture space of the procedural maps).
    masks : dict name -> (n_vertices,) float32 in [0, 1].
    identity_basis : (100, n_vertices * 3) float32, C-contiguous.
    neutral_flat : (n_vertices * 3,) float32 neutral vertices, cm.
    expression_basis : (53, n_vertices * 3) float32, C-contiguous.
    incidence : (n_vertices, T) sparse matrix summing triangle normals to vertices.
    landmarks_68 : (68,) int64 landmark vertex indices (face region).
    n_skin_vertices : the skin and head vertices are the prefix ``[0, n_skin_vertices)``.
    tri_part : (T,) int8 part code of each triangle.
    eye_centres_cm : (2, 3) float64 neutral centres of the (left, right) eyeball spheres; the iris
        is painted per pixel on the outer sphere around the model's +z axis.
    skin_triangles : (T_s, 3) int64, the triangles whose vertices are all skin/head vertices
        (the scalp the hair layer grows from).
    caster_triangles : (T_c, 3) int64, the triangles of skin and head parts (shadow casters).
    n_caster_vertices : the caster triangles use only vertices ``[0, n_caster_vertices)``.
    """

    n_vertices: int
    triangles: np.ndarray
    n_face_tris: int
    n_face_vertices: int
    part: np.ndarray
    canon: np.ndarray
    neutral_cm: np.ndarray
    masks: dict
    identity_basis: np.ndarray
    neutral_flat: np.ndarray
    expression_basis: np.ndarray
    incidence: sp.csr_matrix
    landmarks_68: np.ndarray
    n_skin_vertices: int
    tri_part: np.ndarray
    eye_centres_cm: np.ndarray
    skin_triangles: np.ndarray
    caster_triangles: np.ndarray
    n_caster_vertices: int


_cache: weakref.WeakKeyDictionary[FaceModel, RenderMesh] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def render_mesh(model: FaceModel) -> RenderMesh:
    """The render mesh of ``model`` (built once per model object and cached)."""
    with _lock:
        rm = _cache.get(model)
        if rm is None:
            rm = _build(model)
            _cache[model] = rm
        return rm


def _triangulate(faces: np.ndarray) -> np.ndarray:
    quad = faces[:, 3] >= 0
    return np.concatenate([faces[:, [0, 1, 2]], faces[quad][:, [0, 2, 3]]], axis=0)


def _build(model: FaceModel) -> RenderMesh:
    tmpl = model.template
    face_tris = tmpl.triangles().astype(np.int64)
    n_face_v = tmpl.n_vertices
    mat_ids = [model.material_names.index(n) for n in _RENDER_MATERIALS[1:]]
    other = _triangulate(model.faces[np.isin(model.face_material, mat_ids)].astype(np.int64))
    other = other[_keep_triangles(model, other)]
    tris = np.concatenate([face_tris, other], axis=0)
    nv = int(tris.max()) + 1

    part = np.full(nv, SKIN, dtype=np.int8)
    for code, names in _PART_REGIONS.items():
        for n in names:
            a, b = model.regions[n]
            part[a:min(b, nv)] = code
    part[:n_face_v] = SKIN

    n_skin = int(np.flatnonzero(part > HEAD)[0])
    if not ((part[:n_skin] <= HEAD).all() and (part[n_skin:] > HEAD).all()):
        raise ValueError("render mesh: skin and head vertices are expected to come first")
    neutral = model.neutral_vertices[:nv].astype(np.float64)
    masks = _masks(model, neutral, part)

    T = tris.shape[0]
    rows = tris.ravel()
    cols = np.repeat(np.arange(T), 3)
    inc = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(nv, T))

    tri_part = part[tris[:, 0]].copy()
    casters = np.ascontiguousarray(tris[tri_part <= HEAD])
    basis = np.ascontiguousarray(model.identity_basis[:, :nv].reshape(model.identity_basis.shape[0], -1))
    rm = RenderMesh(
        n_vertices=nv,
        triangles=tris,
        n_face_tris=int(face_tris.shape[0]),
        n_face_vertices=n_face_v,
        part=part,
        canon=canonical_coordinates(model),
        neutral_cm=neutral.astype(np.float32),
        masks=masks,
        identity_basis=basis,
        incidence=inc,
        landmarks_68=tmpl.landmarks_68.astype(np.int64),
        n_skin_vertices=n_skin,
        neutral_flat=model.neutral_vertices[:nv].astype(np.float32).ravel(),
        expression_basis=np.ascontiguousarray(
            model.expression_basis[:, :nv].reshape(model.expression_basis.shape[0], -1)),
        tri_part=tri_part,
        eye_centres_cm=np.stack([
            model.neutral_vertices[slice(*model.regions[f"sclera_{s}"])].astype(np.float64).mean(axis=0)
            for s in ("left", "right")]),
        skin_triangles=np.ascontiguousarray(tris[(tris < n_skin).all(axis=1)]),
        caster_triangles=casters,
        n_caster_vertices=int(casters.max()) + 1,
    )
    for arr in (rm.triangles, rm.part, rm.canon, rm.neutral_cm, rm.identity_basis, rm.neutral_flat,
                rm.expression_basis, rm.tri_part,
                rm.eye_centres_cm, rm.skin_triangles, rm.caster_triangles, *masks.values()):
        arr.setflags(write=False)
    return rm


def _keep_triangles(model: FaceModel, tris: np.ndarray) -> np.ndarray:
    """Drop geometry that is never seen or that hides what is seen: the inner "iris" spheres
    (the iris is painted on the outer sphere, see ``eye_centres``), the back halves of the eyeballs
    and the back of the mouth (molars, back of the tongue: hidden, and dark anyway)."""
    v = model.neutral_vertices.astype(np.float64)
    cen = v[tris].mean(axis=1)
    keep = np.ones(len(tris), dtype=bool)
    for side in ("left", "right"):
        ia, ib = model.regions[f"iris_{side}"]
        sa, sb = model.regions[f"sclera_{side}"]
        keep &= ~((tris >= ia).all(axis=1) & (tris < ib).all(axis=1))
        sclera = (tris >= sa).all(axis=1) & (tris < sb).all(axis=1)
        keep &= ~(sclera & (cen[:, 2] < v[sa:sb, 2].mean() - 0.3))
    for name in ("teeth", "gums_and_tongue"):
        a, b = model.regions[name]
        inside = (tris >= a).all(axis=1) & (tris < b).all(axis=1)
        keep &= ~(inside & (cen[:, 2] < 6.5))
    return keep


def _seg_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points p (N, 2) to the segments a-b (S, 2): (N, S)."""
    ab = b - a
    ap = p[:, None, :] - a[None]
    t = np.clip((ap * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    d = ap - t[..., None] * ab[None]
    return np.sqrt((d * d).sum(-1))


def _polyline_dist(p, pts):
    return _seg_dist(p, pts[:-1], pts[1:]).min(axis=1)


def _inside_polygon(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    x, y = p[:, 0:1], p[:, 1:2]
    a, b = poly, np.roll(poly, -1, axis=0)
    cond = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    xint = a[None, :, 0] + (y - a[None, :, 1]) * (b[None, :, 0] - a[None, :, 0]) / (
        b[None, :, 1] - a[None, :, 1] + 1e-12)
    return (cond & (x < xint)).sum(axis=1) % 2 == 1


def _smooth(d, r0, r1):
    """1 below r0, 0 above r1, smooth in between."""
    t = np.clip((d - r0) / (r1 - r0), 0.0, 1.0)
    return 1.0 - t * t * (3 - 2 * t)


def _masks(model: FaceModel, v: np.ndarray, part: np.ndarray) -> dict[str, np.ndarray]:
    """Per-vertex appearance masks on the neutral mesh (cm), from the 68 landmarks."""
    lm = v[model.template.landmarks_68]
    xy = v[:, :2]
    front = v[:, 2] > 2.0
    skin = (part == SKIN) | (part == HEAD)

    lips_outer = lm[48:60, :2]
    d_lip = _polyline_dist(xy, np.vstack([lips_outer, lips_outer[:1]]))
    inside = _inside_polygon(xy, lips_outer)
    lips = np.where(inside, 1.0, _smooth(d_lip, 0.0, 0.25)) * front * skin

    brow = np.zeros(len(v))
    for a, b in ((17, 22), (22, 27)):
        pts = lm[a:b, :2] + np.array([0.0, 0.15])
        brow = np.maximum(brow, _smooth(_polyline_dist(xy, pts), 0.2, 0.55))
    brow *= front * skin

    eyes = np.zeros(len(v))
    for a, b in ((36, 42), (42, 48)):
        c = lm[a:b, :2].mean(axis=0)
        eyes = np.maximum(eyes, _smooth(np.linalg.norm((xy - c) * [0.8, 1.3], axis=1), 0.9, 2.2))
    eyes *= front * skin

    # Lash lines: the skin along the lid margins (upper: dark lashes, lower: a thin shadow).
    lash_up = np.zeros(len(v))
    lash_lo = np.zeros(len(v))
    for up_ids, lo_ids in (([36, 37, 38, 39], [39, 40, 41, 36]), ([42, 43, 44, 45], [45, 46, 47, 42])):
        lash_up = np.maximum(lash_up, _smooth(_polyline_dist(xy, lm[up_ids, :2] + [0, 0.05]), 0.08, 0.28))
        lash_lo = np.maximum(lash_lo, _smooth(_polyline_dist(xy, lm[lo_ids, :2]), 0.03, 0.18))
    lash_up *= front * (part == SKIN)
    lash_lo *= front * (part == SKIN)

    cheeks = np.zeros(len(v))
    for i_eye, i_mouth in ((41, 48), (46, 54)):
        c = 0.5 * (lm[i_eye, :2] + lm[i_mouth, :2])
        c = c + np.array([np.sign(c[0]) * 1.2, 0.0])
        cheeks = np.maximum(cheeks, _smooth(np.linalg.norm(xy - c, axis=1), 0.3, 3.2))
    cheeks *= front * skin

    nose = _smooth(np.linalg.norm(xy - lm[30, :2], axis=1), 0.3, 1.6) * front * skin

    # Beard: below the nose and cheek line, above the neck, around the mouth and jaw.
    jaw = lm[0:17, :2]
    y_nose = lm[33, 1]
    beard_zone = (xy[:, 1] < y_nose - 0.2) & (np.abs(xy[:, 0]) < np.abs(jaw[:, 0]).max() + 0.5)
    beard_zone &= xy[:, 1] > lm[8, 1] - 3.0
    beard = beard_zone.astype(np.float64) * (1.0 - lips) * skin
    # fade out towards the neck, below the chin
    beard *= _smooth(lm[8, 1] - xy[:, 1], 0.5, 2.5)

    forehead = (xy[:, 1] > lm[19, 1] + 0.8) * front * skin
    tzone = np.maximum(forehead * 0.8, nose)

    # Scalp height for hair: distance above the brow line (cm), and "behind the ears".
    brow_y = lm[17:27, 1].mean()
    height = v[:, 1] - brow_y
    ear_z = lm[0, 2]
    behind = np.clip((ear_z - v[:, 2]) / 3.0, 0.0, 1.0)

    # Fixed colours and occlusion of the mouth and eye interiors; base specular strength.
    inner_colour = np.zeros((len(v), 3))
    inner_colour[part == MOUTH] = [0.25, 0.06, 0.06]
    inner_colour[part == EYE_SOCKET] = [0.45, 0.18, 0.16]
    inner_colour[part == GUMS] = [0.55, 0.15, 0.15]
    inner = (part == MOUTH) | (part == GUMS) | (part == TEETH)
    inner_ao = np.where(inner, np.clip((v[:, 2] - 4.0) / 6.0, 0.12, 1.0), 1.0)
    spec_base = np.where(part == SKIN, 0.5 + 0.5 * tzone, 0.3)
    spec_base[part == SCLERA] = 3.0
    spec_base[part == TEETH] = 1.0
    spec_base[part == MOUTH] = 0.2

    out = {
        "lips": lips, "brow": brow, "eyes": eyes, "cheeks": cheeks, "nose": nose,
        "lash_up": lash_up, "lash_lo": lash_lo, "beard": beard, "tzone": tzone,
        "freckle": np.clip(cheeks + nose, 0, 1), "height": height, "behind": behind,
        "inner_colour": inner_colour, "inner_ao": inner_ao, "spec_base": spec_base,
    }
    return {k: np.asarray(a, dtype=np.float32) for k, a in out.items()}
