"""Exact maps of a known face for the geometry tests and benchmark (development helper).

Renders with :func:`.generator.generate_sample` (clean), or with ``prefer_synth=False`` renders
the face-region mesh itself with :func:`.raster.rasterize` (same label frame, pinhole camera,
perspective-correct interpolation).
"""

from __future__ import annotations

import numpy as np

__all__ = ["degrade_maps", "exact_maps"]


def _own_render(model, identity, expression, yaw_deg, resolution, distance_mm=600.0):
    from ...core.correspondence import MODEL_TO_CAMERA, canonical_coordinates
    from .raster import interpolate, rasterize

    v = model.sample_face(identity, expression, region="face") * 10.0  # mm, model frame
    c = v.mean(axis=0)
    y = np.deg2rad(yaw_deg)
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    cam = (v - c) @ (Ry @ MODEL_TO_CAMERA).T + np.array([0.0, 0.0, distance_mm])
    tris = model.template.triangles()
    # frame the face: crop side 1.15 x the projected extent (like the 68-landmark crop)
    ext = np.abs(cam[:, :2] / cam[:, 2:3]).max() * 2.0 * 1.15
    focal = resolution / ext
    r = rasterize(cam, tris, focal, resolution)
    z_ref = cam[:, 2].mean()
    gt = cam - np.array([0.0, 0.0, z_ref])
    mask = r.tri_id >= 0
    xyz = interpolate(gt, tris, r.tri_id, r.bary).astype(np.float32)
    corr = interpolate(canonical_coordinates(model).astype(np.float64), tris, r.tri_id,
                       r.bary).astype(np.float32)
    # simple shaded grey image (Lambert, light from the camera)
    from ...core.geometry.laplacian import vertex_normals
    n = vertex_normals(gt, tris)
    shade = np.clip(-n[:, 2], 0, 1)[:, None] * np.ones((1, 3)) * 200 + 30
    img = interpolate(shade, tris, r.tri_id, r.bary)
    return dict(image=np.clip(img, 0, 255).astype(np.uint8), xyz=xyz, corr=corr, mask=mask,
                vertices_cam=gt.astype(np.float32),
                meta=dict(yaw_deg=yaw_deg, renderer="exact_maps"))


def exact_maps(model, seed=0, resolution=256, identity=None, expression=None, yaw_deg=0.0,
               prefer_synth=True, **kwargs):
    """Render exact maps of a face; dict like ``synth.generate_sample`` (image, xyz, corr, mask,
    vertices_cam (9409, 3) mm label frame ground truth, meta). ``kwargs`` go to
    ``generate_sample`` (e.g. ``pitch_deg``, ``roll_deg``)."""
    if prefer_synth:
        from .generator import generate_sample

        kw = dict(model=model, yaw_deg=yaw_deg, clean=True, **kwargs)
        if identity is not None:
            kw["identity"] = identity
        if expression is not None:
            kw["expression"] = expression
        return generate_sample(seed, resolution, **kw)
    return _own_render(model, identity, expression, yaw_deg, resolution)


def degrade_maps(sample, seed=0, depth_noise_mm=1.0, corr_outlier_fraction=0.2,
                 hole_fraction=0.1):
    """Copy of ``sample`` with Gaussian depth noise (mm, along z), a fraction of the valid
    pixels' correspondences replaced by uniform random values, and a hole (a disc of
    ``hole_fraction`` of the valid pixels, inside the face) removed from the mask."""
    rng = np.random.default_rng(seed)
    out = dict(sample)
    mask = sample["mask"].copy()
    xyz = sample["xyz"].copy()
    corr = sample["corr"].copy()
    rows, cols = np.nonzero(mask)
    n = len(rows)
    # hole: the valid pixels nearest to a random valid pixel away from the border
    k = rng.integers(n)
    centre = np.array([rows.mean(), cols.mean()]) * 0.6 + np.array([rows[k], cols[k]]) * 0.4
    d = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    hole = np.argsort(d)[: int(hole_fraction * n)]
    mask[rows[hole], cols[hole]] = False
    xyz[..., 2] += (rng.standard_normal(mask.shape) * depth_noise_mm).astype(np.float32)
    rows, cols = np.nonzero(mask)
    bad = rng.random(len(rows)) < corr_outlier_fraction
    corr[rows[bad], cols[bad]] = rng.random((int(bad.sum()), 3)).astype(np.float32)
    xyz[~mask] = 0
    corr[~mask] = 0
    out.update(xyz=xyz, corr=corr, mask=mask)
    return out
