"""Texture clean-up and completion, and the detail's tangent-space normal map (core, no bpy).

The clean-up is checked on a rendered face with a known appearance: the same synthetic face
with and without a hair fringe composited over the forehead (the fringe also removed from the
networks' mask, as the trained mask network does), reconstructed with the exact oracle maps.
The reference is the projection of the fringe-free photo."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core.geometry import subdivide_corner_uvs
from pix2vertex_addon.core.normal_map import (
    bake_normal_map,
    corner_tangents,
    decode_normal,
    tangent_space_normals,
)
from pix2vertex_addon.core.projection import bake_texture
from pix2vertex_addon.core.texture import clean_texture, complete_texture, texel_confidence

from oracle import oracle_pipeline

# measured on seed 11 (mean absolute error, 8-bit, on the occluded skin): raw 114.4, completed
# 31.9 (ratio 0.28; before the colour test in chroma and the outer band 0.33); the test asks for
# at most half the raw error
MAX_ERROR_RATIO = 0.5


def hair_fringe(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """(photo with a dark, streaked fringe down to the brows, its (R, R) bool coverage)."""
    img = sample["image"]
    lm = sample["landmarks_2d"]
    r = img.shape[0]
    yy, xx = np.mgrid[0:r, 0:r] + 0.5
    edge = lm[17:27, 1].min() - 2 + 4 * np.sin(xx / 5.0)
    hair = (yy < edge) & (xx > lm[:, 0].min() - 20) & (xx < lm[:, 0].max() + 20)
    strand = 0.6 + 0.4 * np.sin(xx * 1.7 + np.random.default_rng(0).normal(0, 0.3, (r, r)))
    out = img.astype(np.float64)
    out[hair] = np.array([60.0, 40.0, 25.0]) * strand[hair, None]
    return np.clip(out, 0, 255).astype(np.uint8), hair


@pytest.fixture(scope="module")
def fringe_case(face_model):
    from pix2vertex_addon.training.synth import generate_sample

    s = generate_sample(11, 256, clean=True)
    photo, hair = hair_fringe(s)
    occluded = dict(s, image=photo, mask=s["mask"] & ~hair)
    occluded["xyz"] = s["xyz"] * occluded["mask"][..., None]
    occluded["corr"] = s["corr"] * occluded["mask"][..., None]
    rec = oracle_pipeline(occluded, face_model).reconstruct(photo)[0]
    return s, photo, rec


def test_completion_beats_the_raw_projection_under_hair(fringe_case, face_model):
    s, photo, rec = fringe_case
    t = face_model.template
    res = clean_texture(photo, rec.camera, rec.vertices, t.vertices_cm * 10.0, t.faces, t.uvs,
                        mask=rec.maps["mask"])
    ref, _ = bake_texture(s["image"], rec.camera, rec.vertices, t.faces, t.uvs)
    conf_clean = texel_confidence(rec.camera, rec.vertices, t.faces, t.uvs, s["image"].shape[:2],
                                  mask=s["mask"].astype(np.float32))
    under_hair = (conf_clean > 0.8) & (res.confidence < 0.2)
    assert under_hair.sum() > 20000, "the fringe should hide a good part of the forehead"
    e_raw = np.abs(res.raw.astype(float) - ref)[under_hair].mean()
    e_new = np.abs(res.texture.astype(float) - ref)[under_hair].mean()
    assert e_new < MAX_ERROR_RATIO * e_raw, f"completed {e_new:.1f} vs raw {e_raw:.1f}"
    # well-seen skin is kept as photographed (but for the fade to one skin colour at the border)
    from pix2vertex_addon.core.texture import SEAM_MM, seam_distance

    kept = (conf_clean > 0.8) & (res.confidence > 0.8) & (seam_distance(t.vertices_cm * 10.0, t.faces, t.uvs) > SEAM_MM)
    assert np.abs(res.texture.astype(float) - ref)[kept].mean() < 0.1  # measured 0.000 on 348,208 texels
    # the raw projection is the plain bake (the second image artists can use)
    np.testing.assert_array_equal(res.raw, bake_texture(photo, rec.camera, rec.vertices, t.faces, t.uvs)[0])


def _well_seen_inside_the_mask(rec, face_model, photo: np.ndarray, mask: np.ndarray,
                               depth_crop: np.ndarray | None = None):
    """Texels seen, facing the camera (confidence without a mask > 0.8) and inside ``mask`` (its
    holes filled) more than 6 % of the crop side from its outline and the crop's edge: skin and
    features the clean-up must keep as photographed."""
    from scipy import ndimage

    from pix2vertex_addon.core.projection import texel_view

    t = face_model.template
    view = texel_view(rec.camera, rec.vertices, t.faces, t.uvs, photo.shape[:2], 1024, depth_crop=depth_crop)
    c0 = texel_confidence(rec.camera, rec.vertices, t.faces, t.uvs, photo.shape[:2], view=view)
    solid = ndimage.binary_fill_holes(np.asarray(mask) >= 0.5)
    dist = ndimage.distance_transform_edt(np.pad(solid, 1))[1:-1, 1:-1]
    r = solid.shape[0]
    ij = np.clip(view.crop_xy.astype(np.int64), 0, r - 1)
    d = np.zeros(1024 * 1024)
    d[view.inside] = dist[ij[:, 1], ij[:, 0]]
    return (c0 > 0.8) & (d.reshape(1024, 1024) > 0.06 * r)


def _kept_as_photographed(res, well: np.ndarray) -> tuple[float, float, float]:
    """(mean error, fraction above 3 levels, mean error on the dark features) of the cleaned
    texture against the raw projection over ``well`` (8-bit, largest channel difference). Dark
    features (brows, lashes, lid creases): more than 4 robust deviations from the median colour
    in log colour, and darker than the median."""
    raw = res.raw.astype(np.float64)
    err = np.abs(res.texture.astype(np.float64) - raw).max(axis=-1)
    lg = np.log(raw + 4.0)
    med = np.median(lg[well], axis=0)
    mad = 1.4826 * np.median(np.abs(lg[well] - med), axis=0)
    lum = raw.mean(axis=-1)
    dark = well & ((np.abs(lg - med) / mad).max(axis=-1) > 4.0) & (lum < np.median(lum[well]))
    assert dark.sum() > 500, "the face should have brows and lashes"
    return float(err[well].mean()), float((err[well] > 3).mean()), float(err[dark].mean())


def test_well_seen_skin_and_brows_keep_their_colour_under_a_soft_mask(face_model):
    """The trained mask is soft: its eye and mouth holes have grey rims. Closed without them, the
    rims' grey spread over the lids and brows by the erosion and washed them out."""
    from scipy import ndimage

    from pix2vertex_addon.training.synth import generate_sample

    s = generate_sample(11, 256, clean=True)
    rec = oracle_pipeline(s, face_model).reconstruct(s["image"])[0]
    soft = ndimage.gaussian_filter(s["mask"].astype(np.float32), 2.0)
    t = face_model.template
    res = clean_texture(s["image"], rec.camera, rec.vertices, t.vertices_cm * 10.0, t.faces, t.uvs, mask=soft)
    mean, above3, dark = _kept_as_photographed(res, _well_seen_inside_the_mask(rec, face_model, s["image"], s["mask"]))
    # measured: 0.0001, 0, 0 on 309,606 texels (the previous clean-up, rims left open: 0.13 mean)
    assert mean < 0.06 and above3 < 0.005 and dark < 0.3, (mean, above3, dark)


@pytest.mark.slow
def test_astronaut_keeps_her_brows_and_contrast(face_model):
    """The shipped networks on the astronaut: well-seen texels inside the predicted mask are kept."""
    from pix2vertex_addon.core.images import load_image
    from pix2vertex_addon.core.pipeline import Pipeline
    from pix2vertex_addon.core.projection import crop_depth
    from pix2vertex_addon.core.results import detailed_mesh

    from photos import photo_paths

    photo, _ = load_image(photo_paths()["astronaut"])
    pipe = Pipeline(face_model)
    rec = pipe.reconstruct(photo)[0]
    t = face_model.template
    v, q, _ = detailed_mesh(rec, t.faces, t.uvs)
    dcrop = crop_depth(rec.camera, v, np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]))
    mask = rec.maps["mask"]
    res = clean_texture(photo, rec.camera, rec.vertices, t.vertices_cm * 10.0, t.faces, t.uvs, mask=mask,
                        depth_crop=dcrop)
    well = _well_seen_inside_the_mask(rec, face_model, photo, mask, dcrop)
    mean, above3, dark = _kept_as_photographed(res, well)
    # measured: 0.01, 0.0014, 0.31 on 225,915 texels (with the mask's hole rims left open: 0.45,
    # 0.044, 3.18)
    assert mean < 0.1 and above3 < 0.01 and dark < 1.0, (mean, above3, dark)


def test_texture_border_fades_to_one_skin_colour(fringe_case, face_model):
    """On the face's outer border (the seam with a full head's skin) the texture is one colour,
    the median of the well-seen skin, which the head's skin material takes (head_files)."""
    from pix2vertex_addon.core.texture import SEAM_MM, seam_distance

    _, photo, rec = fringe_case
    t = face_model.template
    rest = t.vertices_cm * 10.0
    res = clean_texture(photo, rec.camera, rec.vertices, rest, t.faces, t.uvs, mask=rec.maps["mask"])
    dist = seam_distance(rest, t.faces, t.uvs)
    border = (dist > 0) & (dist < 0.5)  # 0: outside the islands
    assert border.sum() > 500
    col = res.texture[border].astype(np.int64)
    assert (col.max(axis=0) - col.min(axis=0)).max() <= 2, (col.min(axis=0), col.max(axis=0))
    skin = np.median(res.raw[res.confidence >= 0.5], axis=0)
    assert np.abs(np.median(col, axis=0) - skin).max() <= 3, (np.median(col, axis=0), skin)
    # well inside the face the fade changes nothing
    away = (dist > SEAM_MM) & (res.confidence >= 0.8)
    np.testing.assert_array_equal(res.texture[away], res.raw[away])


def test_confidence_ignores_the_eye_holes_but_not_the_fringe(fringe_case, face_model):
    _, photo, rec = fringe_case
    t = face_model.template
    conf = texel_confidence(rec.camera, rec.vertices, t.faces, t.uvs, photo.shape[:2], mask=rec.maps["mask"])
    uv_of = {}
    for name, idx in (("eye_corner", t.landmarks_68[39]), ("nose_tip", t.landmarks_68[30])):
        rows, cols = np.nonzero(t.faces == idx)
        u, v = t.uvs[rows[0], cols[0]]
        uv_of[name] = conf[int((1 - v) * 1024), int(u * 1024)]
    assert uv_of["nose_tip"] > 0.9 and uv_of["eye_corner"] > 0.3, uv_of
    assert 0.0 <= conf.min() and conf.max() <= 1.0


def test_fill_without_a_mirror_is_smooth_and_seamless():
    """A gradient texture with a hole and nothing mirrored: the fill continues the gradient."""
    s = 256
    yy, xx = np.mgrid[0:s, 0:s]
    raw = np.stack([60 + 0.5 * xx, 80 + 0.3 * yy, np.full((s, s), 120.0)], axis=-1).astype(np.uint8)
    inside = np.ones((s, s), bool)
    conf = np.ones((s, s))
    hole = (abs(xx - 128) < 40) & (abs(yy - 128) < 40)
    corrupted = raw.copy()
    corrupted[hole] = (255, 0, 255)
    conf[hole] = 0.0
    out, filled = complete_texture(corrupted, conf, inside, None)
    assert filled.sum() == hole.sum()
    err = np.abs(out.astype(float) - raw)[hole]
    assert err.mean() < 4.0 and err.max() < 20, (err.mean(), err.max())
    np.testing.assert_array_equal(out[~hole], raw[~hole])


def _sample(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    from pix2vertex_addon.core.projection import _bilinear

    s = img.shape[0]
    return _bilinear(img, np.stack([uv[:, 0] * s, (1 - uv[:, 1]) * s], axis=1))


@pytest.mark.slow
def test_normal_map_reproduces_the_detail_normals(fringe_case, face_model):
    from pix2vertex_addon.core.geometry.laplacian import vertex_normals
    from pix2vertex_addon.core.normal_map import _quad_tris

    _, _, rec = fringe_case
    t = face_model.template
    d = rec.detail
    uv = subdivide_corner_uvs(t.faces, t.uvs, rec.detail_levels)
    # the face's detail field, with pores and wrinkles this clean render lacks: +-0.5 mm bumps
    x, y = d.vertices[:, 0], d.vertices[:, 1]
    disp = d.displacement + 0.5 * np.sin(x / 1.5) * np.sin(y / 2.0) * d.weights
    nmap = bake_normal_map(d.vertices, d.faces, uv, disp, size=2048)
    tris, _ = _quad_tris(d.faces)
    n = vertex_normals(d.vertices, tris)
    nd = vertex_normals(d.vertices + disp[:, None] * n, tris)
    tan, bit = corner_tangents(d.vertices, d.faces, uv, n)
    ts = decode_normal(_sample(nmap, uv.reshape(-1, 2)).astype(np.float64))
    corner_v = d.faces.ravel()
    world = ts[:, :1] * tan.reshape(-1, 3) + ts[:, 1:2] * bit.reshape(-1, 3) + ts[:, 2:3] * n[corner_v]
    world /= np.linalg.norm(world, axis=1, keepdims=True)
    detail_moves = d.weights[corner_v] > 0.5  # away from the unseen border
    ang = np.degrees(np.arccos(np.clip((world * nd[corner_v]).sum(1), -1, 1)))[detail_moves]
    ang_base = np.degrees(np.arccos(np.clip((n * nd).sum(1), -1, 1)))[corner_v][detail_moves]
    print(f"angle to the detail normals: median {np.median(ang):.2f} p90 {np.percentile(ang, 90):.2f} deg; "
          f"base normals {np.median(ang_base):.2f} deg")
    assert np.median(ang_base) > 5.0, "the detail should tilt the normals"
    # measured: median 0.23, 90th percentile 0.45 degrees (8-bit texels, 2048 square)
    assert np.median(ang) < 0.5 and np.percentile(ang, 90) < 1.5


def test_flat_detail_gives_a_flat_normal_map(face_model):
    t = face_model.template
    v = t.vertices_cm * 10.0
    ts = tangent_space_normals(v, t.faces, t.uvs, np.zeros(len(v)))
    valid = t.faces >= 0
    np.testing.assert_allclose(ts[valid], np.tile([0.0, 0.0, 1.0], (int(valid.sum()), 1)), atol=1e-9)
    img = bake_normal_map(v, t.faces, t.uvs, np.zeros(len(v)), size=256)
    assert np.abs(img.astype(int) - [128, 128, 255]).max() <= 1


def test_table_medians_equal_numpys():
    """The histogram medians of the colour test and the skin anchor (only the codes that occur
    sorted) give ``np.median`` of the looked-up values exactly, ties in the table included."""
    from pix2vertex_addon.core.texture import _CHROMA, _LOG32, _LOG64, _robust_centre, _table_median

    rng = np.random.default_rng(5)
    for table, hi in ((_LOG32, 256), (_LOG64, 256), (_CHROMA, 65536), (np.repeat(np.arange(128.0), 2), 256)):
        for n in (1, 2, 7, 1000, 20001):
            codes = rng.integers(0, hi, n)
            if n > 2:
                codes[: n // 3] = codes[0]  # a heavy mode
            assert _table_median(codes, table) == np.median(table[codes])
            med, mad = _robust_centre(codes, table)
            assert med == np.median(table[codes])
            assert mad == np.median(np.abs(table[codes] - med))


def test_row_blocks_and_normal_map_arithmetic_are_exact():
    """The block-by-block products (``row_blocks``) give ``w @ x`` bit for bit, and are remembered
    per matrix; the normal map's written-out row dot products and cross product give NumPy's
    ``(a * b).sum(axis=1)`` and ``np.cross`` bit for bit (what keeps the files unchanged)."""
    import scipy.sparse as sp

    from pix2vertex_addon.core.normal_map import _cross, _rowdot
    from pix2vertex_addon.core.projection import row_blocks

    rng = np.random.default_rng(7)
    n, m = 70001, 500
    cols = rng.integers(0, m, (n, 3))
    w = sp.csr_matrix((rng.random(3 * n), cols.ravel(), np.arange(0, 3 * n + 1, 3)), shape=(n, m))
    x = rng.normal(size=(m, 3))
    blocks = row_blocks(w, 4096)
    assert blocks[0][0] == 0 and blocks[-1][1] == n and len(blocks) == -(-n // 4096)
    assert np.array_equal(np.concatenate([rows @ x for _, _, rows in blocks]), w @ x)
    assert row_blocks(w, 4096) is blocks and row_blocks(w.copy(), 4096) is not blocks
    a, b = rng.normal(size=(10000, 3)), rng.normal(size=(10000, 3))
    assert np.array_equal(_rowdot(a, b), (a * b).sum(axis=1))
    assert np.array_equal(np.sqrt(_rowdot(a, a)), np.linalg.norm(a, axis=1))
    assert np.array_equal(_cross(a, b), np.cross(a, b))
