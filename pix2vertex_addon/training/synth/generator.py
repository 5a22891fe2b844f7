"""One synthetic training sample: image and pixel-aligned labels (no ``bpy``).

See docs/reference/synth.md for what is randomised and docs/reference/conventions.md for the label contract.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from ...core.correspondence import MODEL_TO_CAMERA
from ...core.crop import crop_box_from_landmarks
from ...core.face_model import N_IDENTITY, FaceModel, load_synth_face_model
from ...core.geometry.laplacian import vertex_normals
from . import appearance
from .hair import hair_layer
from .mesh import SCLERA, RenderMesh, render_mesh
from .raster import interpolate_pixels, project, rasterize
from .sampling import (
    identity_id_of_seed,
    rng_for,
    rotation_from_pose,
    sample_expression,
    sample_identity,
    sample_pose,
    split_of_seed,
)

__all__ = ["generate_sample", "DISTANCE_RANGE_MM", "CROP_SCALE_JITTER", "CROP_SHIFT_JITTER"]

DISTANCE_RANGE_MM = (380.0, 3000.0)  # camera to head centre (model origin), log-uniform
CROP_SCALE_JITTER = 0.05  # crop side within (1 +- 0.05) of the convention's side
CROP_SHIFT_JITTER = 0.03  # crop centre within +- 0.03 side of the convention's centre
MIN_RESOLUTION = 16




def _shape_cm(model: FaceModel, rm: RenderMesh, w_id: np.ndarray, w_ex: np.ndarray) -> np.ndarray:
    v = rm.neutral_flat + w_id.astype(np.float32) @ rm.identity_basis[: w_id.size]
    nz = np.flatnonzero(w_ex)
    if nz.size:
        v += w_ex[nz].astype(np.float32) @ rm.expression_basis[nz]
    return v.reshape(rm.n_vertices, 3).astype(np.float64)


def sample_camera(rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """Camera distance (mm, log-uniform), crop scale jitter and crop shift jitter (2,) from the
    sample's "camera" stream."""
    lo, hi = DISTANCE_RANGE_MM
    dist = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    s_j = float(rng.uniform(1 - CROP_SCALE_JITTER, 1 + CROP_SCALE_JITTER))
    return dist, s_j, rng.uniform(-CROP_SHIFT_JITTER, CROP_SHIFT_JITTER, 2)


def _place_camera(X_lm: np.ndarray, R: int, distance: float, scale: float, shift: np.ndarray):
    """Translation t (mm) and focal f (px) so the crop of the projected landmarks is the
    image window scaled by ``scale`` and shifted by ``shift`` (pixels)."""
    t = np.array([0.0, 0.0, distance])
    f = 1.0
    for _ in range(6):
        P = X_lm + t
        uv1 = P[:, :2] / P[:, 2:3]  # f = 1, principal point 0
        x0, y0, side = crop_box_from_landmarks(uv1)
        f = R * scale / side
        centre = f * np.array([x0 + side / 2, y0 + side / 2])  # relative to the principal point
        delta = shift - centre
        t[:2] += delta * P[:, 2].mean() / f
    return t, f


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, 3) arrays: ``(a * b).sum(axis=1)`` with the same rounding
    (the same order of additions), without numpy's slow reduction over a length-3 axis."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _direction(azimuth_deg, elevation_deg):
    """Unit vector (camera frame) towards a light at this azimuth/elevation seen from the face
    (azimuth 0, elevation 0: the camera's direction; elevation > 0: above)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.sin(a) * math.cos(e), -math.sin(e), -math.cos(a) * math.cos(e)])


def _sample_light(rng: np.random.Generator) -> dict:
    temp = lambda s: np.exp(rng.normal(0, s) * np.array([1.0, 0.0, -1.0]))  # warm/cool  # noqa: E731
    key_on = rng.random() < 0.9
    return {
        "ambient": float(rng.uniform(0.1, 0.55)),
        "ambient_colour": (temp(0.12) * np.exp(rng.normal(0, 0.04, 3))).tolist(),
        "sh1": float(rng.uniform(0.0, 0.35)),
        "sh1_dir": _unit(rng.normal(size=3)).tolist(),
        "key": float(rng.uniform(0.5, 1.6)) if key_on else 0.0,
        "key_dir": _direction(rng.uniform(-100, 100), rng.uniform(-30, 75)).tolist(),
        "key_colour": temp(0.15).tolist(),
        "shadow_soft_px": float(rng.choice([rng.uniform(0.7, 1.2), rng.uniform(1.2, 4.0)])),
        "fill": float(rng.uniform(0.1, 0.5)) if rng.random() < 0.5 else 0.0,
        "fill_dir": _direction(rng.uniform(-90, 90), rng.uniform(-20, 60)).tolist(),
        "wrap": float(rng.uniform(0.0, 0.4)),
        "shininess": float(rng.uniform(10, 70)),
        "specular": float(rng.uniform(0.02, 0.35)),
        # auto-exposure: the median linear luminance of the head is brought to this level
        "exposure": float(np.clip(np.exp(rng.normal(np.log(0.2), 0.35)), 0.06, 0.5)),
    }


def _shadow(rm: RenderMesh, X: np.ndarray, P: np.ndarray, N: np.ndarray, L: np.ndarray,
            size: int) -> np.ndarray:
    """Fraction (0..1) of the key light reaching points P (camera frame) by a shadow map."""
    centre = X.mean(axis=0)
    D = 5000.0
    zl = -L
    up = np.array([0.0, 1.0, 0.0]) if abs(zl[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    xl = _unit(np.cross(up, zl))
    yl = np.cross(zl, xl)
    Rl = np.stack([xl, yl, zl])
    origin = centre + L * D
    Xl = (X[: rm.n_caster_vertices] - origin) @ Rl.T  # the casters use only these vertices
    d = X - centre
    radius = float(np.sqrt(_dot3(d, d).max())) * 1.02
    f = size / 2 * D / radius
    # skin and head cast the shadows that matter
    sm = rasterize(Xl, rm.caster_triangles, f, size, cull_backfaces=True, return_bary=False).depth
    Pl = (P - origin) @ Rl.T
    uv = project(Pl, f, size)
    texel = 2 * radius / size
    ndl = np.clip(N @ L, 0.05, 1.0)
    bias = texel * (1.5 + np.minimum(2.0 * np.sqrt(1 - ndl**2) / ndl, 6.0))
    # 2 x 2 taps of the map around each point (percentage-closer filtering)
    offs = (-0.5, 0.5)
    cols = [np.clip((uv[:, 0] + d).astype(np.int64), 0, size - 1) for d in offs]
    rows = [np.clip((uv[:, 1] + d).astype(np.int64), 0, size - 1) * size for d in offs]
    smf = sm.ravel()
    pz = Pl[:, 2]
    lit = np.zeros(len(P), dtype=np.float32)
    for j in cols:
        for i in rows:
            lit += pz <= smf[i + j] + bias
    return lit / len(offs) ** 2


def generate_sample(
    seed: int,
    resolution: int = 256,
    model: FaceModel | None = None,
    *,
    identity=None,
    identity_scale: float = 1.0,
    expression=None,
    yaw_deg: float | None = None,
    pitch_deg: float | None = None,
    roll_deg: float | None = None,
    distance_mm: float | None = None,
    jitter: bool | None = None,
    clean: bool = False,
    occluders: bool | None = None,
    degrade: bool | None = None,
    shadows: bool = True,
    return_raster: bool = False,
) -> dict:
    """Render one synthetic sample; a pure function of ``seed`` and the options.

    Parameters
    ----------
    seed : int
        Sample seed (its split: :func:`split_of_seed`; identity id = seed).
    resolution : int
        Square side R in pixels (>= 16).
    model : FaceModel, optional
        Defaults to :func:`load_synth_face_model()`.
    identity : (<=100,) float, optional
        Fixed identity weights instead of N(0, identity_scale^2) draws.
    identity_scale : float
        Standard deviation of the random identity weights.
    expression : dict {ARKit name: weight} or (<=53,) float, optional
        Fixed expression ({} is neutral) instead of a random sparse one.
    yaw_deg, pitch_deg, roll_deg : float, optional
        Fixed head pose (see :func:`.sampling.rotation_from_pose` for the signs).
    distance_mm : float, optional
        Fixed camera distance to the head centre (sets the perspective; focal follows the crop).
    jitter : bool, optional
        Crop scale/position jitter (default: on unless ``clean``).
    clean : bool
        Shorthand for no occluders, no camera degradations and no crop jitter.
    occluders, degrade : bool, optional
        Override ``clean`` for occluders / camera degradations.
    shadows : bool
        Cast shadows of the key light (a shadow-map pass).
    return_raster : bool
        Also return "tri_id" (R, R) int64 (render-mesh triangle, -1 background; values below
        ``meta["n_face_tris"]`` are ``Template.triangles()`` rows), "bary" (R, R, 3) float32 and
        "hair_alpha" (R, R) float32 (the hair layer's alpha; pixels >= 0.5 are out of the mask).

    Returns
    -------
    dict with
        image : (R, R, 3) uint8 RGB.
        xyz : (R, R, 3) float32 label frame, mm; 0 outside mask.
        corr : (R, R, 3) float32 canonical correspondence in [0, 1]; 0 outside mask.
        mask : (R, R) bool, face region visible and not occluded.
        vertices_cam : (9409, 3) float32 posed face-region vertices in the label frame, mm.
        landmarks_2d : (68, 2) float32 pixel coordinates (x right, y down, pixel centres at
            integer + 0.5; projected whether visible or not).
        meta : dict (identity, expression, rotation, translation, focal_px, z_ref_mm, ...).
    """
    R = int(resolution)
    if R < MIN_RESOLUTION:
        raise ValueError(f"resolution must be >= {MIN_RESOLUTION}, got {resolution}")
    seed = int(seed)
    model = model if model is not None else load_synth_face_model()
    rm = render_mesh(model)
    jitter = (not clean) if jitter is None else jitter
    occluders = (not clean) if occluders is None else occluders
    degrade = (not clean) if degrade is None else degrade

    # -- face ---------------------------------------------------------------------------------
    identity_id = identity_id_of_seed(seed)
    if identity is None:
        w_id = sample_identity(identity_id, N_IDENTITY, identity_scale)
    else:
        w_id = np.asarray(identity, dtype=np.float64).ravel()
        if w_id.size > N_IDENTITY:
            raise ValueError(f"identity has {w_id.size} weights, the model has {N_IDENTITY}")
    ex_rng = rng_for(seed, "expression")
    ex = sample_expression(ex_rng) if expression is None else expression
    w_ex = model.expression_weights(ex)
    V_cm = _shape_cm(model, rm, w_id, w_ex)

    # -- pose and camera ----------------------------------------------------------------------
    pose = sample_pose(rng_for(seed, "pose"))
    for k, val in (("yaw", yaw_deg), ("pitch", pitch_deg), ("roll", roll_deg)):
        if val is not None:
            pose[k] = float(val)
    rot = rotation_from_pose(pose["yaw"], pose["pitch"], pose["roll"]) @ MODEL_TO_CAMERA
    dist, s_j, sh_j = sample_camera(rng_for(seed, "camera"))
    if distance_mm is not None:
        dist = float(distance_mm)
    if not jitter:
        s_j, sh_j = 1.0, np.zeros(2)
    Xr = (V_cm * 10.0) @ rot.T  # rotated, mm
    lm_idx = rm.landmarks_68
    t, f = _place_camera(Xr[lm_idx], R, dist, s_j, sh_j * R * s_j)
    X = Xr + t
    nfv = rm.n_face_vertices
    z_ref = float(X[:nfv, 2].mean())

    # -- rasterise and labels -------------------------------------------------------------------
    tri_id, bary, depth = rasterize(X, rm.triangles, f, R, cull_backfaces=True)
    covered = tri_id >= 0
    face_px = covered & (tri_id < rm.n_face_tris)

    # -- appearance and shading -----------------------------------------------------------------
    app = appearance.sample_appearance(rng_for(seed, "appearance"))
    light = _sample_light(rng_for(seed, "light"))
    albedo, spec_w, hair_w = appearance.vertex_albedo(rm, app)
    Nv = vertex_normals(X.astype(np.float32), rm.triangles, incidence=rm.incidence)
    canon = np.zeros((rm.n_vertices, 3), dtype=np.float32)
    canon[:nfv] = rm.canon
    attrs = np.concatenate([
        Nv, albedo, rm.neutral_cm, spec_w[:, None], hair_w[:, None], rm.masks["beard"][:, None],
        rm.masks["freckle"][:, None], canon], axis=1)
    cov_idx = np.flatnonzero(covered.ravel())
    tri_c = tri_id.ravel()[cov_idx]
    bary_c = bary.reshape(-1, 3)[cov_idx]
    vals = interpolate_pixels(attrs, rm.triangles[tri_c], bary_c)
    Nrm, alb, neu = vals[:, 0:3], vals[:, 3:6], vals[:, 6:9]
    spw, hw, bw, fz, cn = vals[:, 9], vals[:, 10], vals[:, 11], vals[:, 12], vals[:, 13:16]
    # camera-frame points of the pixels: depth along the rays through the pixel centres
    rows, cols = np.divmod(cov_idx, R)
    ray = np.stack([(cols + 0.5 - R / 2) / f, (rows + 0.5 - R / 2) / f, np.ones(len(cov_idx))], axis=1)
    P = ray * depth.ravel()[cov_idx, None].astype(np.float64)
    Nrm = Nrm / (np.sqrt(_dot3(Nrm, Nrm))[:, None] + 1e-12)
    eye = rm.tri_part[tri_c] == SCLERA
    if eye.any():
        alb[eye] = appearance.paint_eyes(alb[eye], neu[eye], rm.eye_centres_cm, app)

    alb = _albedo_detail(alb, neu, hw, bw, fz, app)

    lin, expo = _shade(alb, Nrm, spw, ray, P, X, covered, rm, light, shadows, R)

    # -- compose ----------------------------------------------------------------------------------
    lm2d = project(X[lm_idx], f, R).astype(np.float32)
    bg_rng = rng_for(seed, "background")
    img, bg_info = appearance.background(bg_rng, R, app["skin_srgb"])
    if bg_rng.random() < 0.7:
        chin = lm2d[8]
        neck_w = float(np.ptp(lm2d[:, 0])) * 0.55
        appearance.torso(bg_rng, R, img, (chin[0], chin[1]), neck_w, app["skin_srgb"])
    img[covered] = appearance.linear_to_srgb(lin).astype(np.float32)
    mask = face_px.copy()
    hair, hair_info = hair_layer(rng_for(seed, "hair"), rm, X, Nv, rot, f, R, covered, depth, app, light,
                                 expo, enabled=occluders)
    if hair is not None:
        _over(img, hair)
        mask &= hair[..., 3] < 0.5
    occ, occ_info = appearance.occluders(rng_for(seed, "occluders"), R, lm2d, app, enabled=occluders)
    if occ is not None:
        _over(img, occ)
        mask &= occ[..., 3] < 0.5
    image, deg_info = appearance.degrade(rng_for(seed, "degrade"), img, enabled=degrade)

    xyz, corr = _labels(mask, cov_idx, P, cn, z_ref, R)
    verts_label = X[:nfv].copy()
    verts_label[:, 2] -= z_ref

    meta = {
        "seed": seed,
        "split": _safe_split(seed),
        "identity_id": identity_id,
        "identity": np.pad(w_id, (0, N_IDENTITY - w_id.size)).astype(np.float32),
        "expression": w_ex.astype(np.float32),
        "expression_active": {model.expression_names[i]: float(w_ex[i]) for i in np.flatnonzero(w_ex)},
        "yaw_deg": pose["yaw"], "pitch_deg": pose["pitch"], "roll_deg": pose["roll"],
        "rotation": rot.astype(np.float64),
        "translation_mm": t.astype(np.float64),
        "focal_px": float(f),
        "z_ref_mm": z_ref,
        "distance_mm": dist,
        "crop_scale": s_j,
        "crop_shift": np.asarray(sh_j, dtype=np.float64),
        "resolution": R,
        "light": light,
        "appearance": app,
        "background": bg_info,
        "hair": hair_info,
        "occluders": occ_info,
        "degrade": deg_info,
        "n_face_tris": rm.n_face_tris,
    }
    out = {
        "image": image,
        "xyz": xyz,
        "corr": corr,
        "mask": mask,
        "vertices_cam": verts_label.astype(np.float32),
        "landmarks_2d": lm2d,
        "meta": meta,
    }
    if return_raster:
        out["tri_id"] = tri_id
        out["bary"] = bary
        out["hair_alpha"] = (hair[..., 3].copy() if hair is not None
                             else np.zeros((R, R), dtype=np.float32))
    return out


def _albedo_detail(alb: np.ndarray, neu: np.ndarray, hw: np.ndarray, bw: np.ndarray, fz: np.ndarray,
                   app: dict) -> np.ndarray:
    """Per-pixel albedo with pores, blotches, beard stubble, freckles and hair strands, looked up
    by neutral position (1 texel = 1 mm); ``hw``/``bw``/``fz`` are the hair, beard and freckle
    weights of the pixels."""
    bank = appearance.noise_bank()
    off = app["noise_offset"]
    tex_uv = np.stack([neu[:, 0] * 10, -neu[:, 1] * 10], axis=1) + 128
    fine = appearance.lookup(bank["fine"], tex_uv, off[:2], bilinear=False)
    mid = appearance.lookup(bank["mid"], tex_uv, off[2:], bilinear=False)  # smooth: nearest is enough
    skin_px = hw < 0.5
    detail = 1 + (app["pores"] * fine + app["blotches"] * mid) * skin_px
    alb = alb * detail[:, None]
    if app["beard"] > 0:
        stub = np.clip(bw * app["beard"] * (fine > 0.5), 0, 1)[:, None] * 0.5
        alb = alb * (1 - stub) + appearance.srgb_to_linear(app["hair_srgb"]).astype(np.float32) * stub
    if app["freckles"] > 0:
        fr = appearance.lookup(bank["fine"], tex_uv * 0.5, off[::-1][:2], bilinear=False)
        alb = alb * (1 - 0.35 * app["freckles"] * np.clip(fz, 0, 1) * (fr > 1.6))[:, None]
    if (hw > 0).any():
        strand = appearance.lookup(bank["strand"], tex_uv * [1.0, 0.25], off[:2], bilinear=False)
        alb = alb * (1 + 0.35 * hw * strand)[:, None]
    return alb


def _shade(alb: np.ndarray, Nrm: np.ndarray, spw: np.ndarray, ray: np.ndarray, P: np.ndarray, X: np.ndarray,
           covered: np.ndarray, rm: RenderMesh, light: dict, shadows: bool, R: int) -> tuple[np.ndarray, float]:
    """Linear RGB of the covered pixels (albedo ``alb``, unit normals ``Nrm``, specular weight
    ``spw``, view rays ``ray`` and camera-frame points ``P``) under ``light``: ambient with a
    first-order spherical term, the key light (wrap, shadow map), specular, fill; then the
    auto-exposure. Returns (linear RGB, exposure gain)."""
    Vdir = (-ray / np.sqrt(_dot3(ray, ray))[:, None]).astype(np.float32)
    amb_c = (light["ambient"] * np.asarray(light["ambient_colour"])).astype(np.float32)
    sh1 = np.asarray(light["sh1_dir"], dtype=np.float32) * np.float32(light["sh1"] / 0.7)
    shade = amb_c * np.clip(1 + Nrm @ sh1, 0.2, None)[:, None]
    if light["key"] > 0:
        L = np.asarray(light["key_dir"], dtype=np.float32)
        ndl = Nrm @ L
        w = light["wrap"]
        diff = np.clip((ndl + w) / (1 + w), 0, None)
        if shadows:
            sm_size = int(np.clip(R // 2, 96, 192))
            sh = _shadow(rm, X, P, Nrm, L, sm_size)
            if light["shadow_soft_px"] > 0:
                img_sh = np.ones((R, R), dtype=np.float32)
                img_sh[covered] = sh
                pil = Image.fromarray((img_sh * 255).astype(np.uint8))
                pil = pil.filter(ImageFilter.GaussianBlur(light["shadow_soft_px"] * R / 256))
                sh = np.asarray(pil, dtype=np.float32)[covered] / 255.0
            # Near the terminator the shading already falls off and a shadow map only adds acne:
            # fade the shadow out where the surface turns away from the light.
            fade = np.clip((ndl - 0.08) / 0.2, 0.0, 1.0)
            sh = 1.0 - (1.0 - sh) * (fade * fade * (3 - 2 * fade))
            diff = diff * sh
        else:
            sh = np.ones(len(P), dtype=np.float32)
        kc = (light["key"] * np.asarray(light["key_colour"])).astype(np.float32)
        shade = shade + diff[:, None] * kc
        H = Vdir + L
        H /= np.sqrt(_dot3(H, H))[:, None]
        spec = (np.clip(_dot3(Nrm, H), 0, 1) ** light["shininess"]) * (ndl > 0) * sh
        spec = spec * light["specular"] * spw
        spec_rgb = spec[:, None] * kc
    else:
        spec_rgb = 0.0
    if light["fill"] > 0:
        fd = np.asarray(light["fill_dir"], dtype=np.float32)
        shade = shade + np.float32(light["fill"]) * np.clip(Nrm @ fd, 0, None)[:, None]
    lin = alb * shade + spec_rgb
    # auto-exposure on the skin's luminance, but the albedo's own darkness is kept: a dark
    # skin stays darker than a light one under the same exposure
    lum = lin @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    alb_lum = alb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    gain = np.median(lum) / max(float(np.median(alb_lum)), 1e-4)  # the light's median gain
    expo = light["exposure"] / max(gain * 0.35, 1e-4)
    lin = lin * np.float32(expo)
    return lin, expo


def _labels(mask: np.ndarray, cov_idx: np.ndarray, P: np.ndarray, cn: np.ndarray, z_ref: float,
            R: int) -> tuple[np.ndarray, np.ndarray]:
    """The label maps: each masked pixel's camera-frame point on its ray (z relative to
    ``z_ref``) and its canonical coordinate; 0 outside the mask."""
    xyz = np.zeros((R, R, 3), dtype=np.float32)
    corr = np.zeros((R, R, 3), dtype=np.float32)
    pm = mask.ravel()[cov_idx]
    lab = P[pm]
    lab[:, 2] -= z_ref
    xyz.reshape(-1, 3)[cov_idx[pm]] = lab
    corr.reshape(-1, 3)[cov_idx[pm]] = np.clip(cn[pm], 0.0, 1.0)
    return xyz, corr


def _over(img: np.ndarray, layer: np.ndarray) -> None:
    """Composite an RGBA (R, R, 4) layer over the (R, R, 3) image in place, within the rows and
    columns where its alpha is non-zero (elsewhere ``img * (1 - 0) + rgb * 0`` is ``img``)."""
    a = layer[..., 3]
    nz = a > 0
    rows, cols = np.flatnonzero(nz.any(axis=1)), np.flatnonzero(nz.any(axis=0))
    if len(rows) == 0:
        return
    win = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    aw = a[win][..., None]
    img[win] = img[win] * (1 - aw) + layer[win][..., :3] * aw


def _safe_split(seed: int) -> str | None:
    try:
        return split_of_seed(seed)
    except ValueError:
        return None
