"""Synthetic data generator: label consistency, determinism, splits, sampled ranges, dataset tool.

The label checks are independent of the rasteriser: they re-pose the face model from the
sample's metadata and cast rays through pixel centres (Moller-Trumbore, numpy).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pix2vertex_addon.core.correspondence import canonical_coordinates
from pix2vertex_addon.core.crop import crop_box_from_landmarks
from pix2vertex_addon.training.synth import (
    SPLITS,
    generate_sample,
    identity_id_of_seed,
    rasterize,
    seed_range,
    split_of_seed,
)
from pix2vertex_addon.training.synth.mesh import render_mesh
from pix2vertex_addon.training.synth.sampling import (
    POSE_RANGES_DEG,
    rng_for,
    sample_expression,
    sample_identity,
    sample_pose,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    """The model the synthetic data are rendered from (the exact npz where it is)."""
    from pix2vertex_addon.core.face_model import load_synth_face_model

    return load_synth_face_model()


def _posed_render_vertices(model, meta):
    """All render-mesh vertices in the camera frame (mm), recomputed from the metadata."""
    rm = render_mesh(model)
    v = model.sample_face(meta["identity"], meta["expression"])[: rm.n_vertices]
    return (v * 10.0) @ np.asarray(meta["rotation"]).T + meta["translation_mm"]


def _ray_cast(X, tris, dirs):
    """Nearest hit of rays from the origin along dirs (M, 3) with triangles: (t, tri, b1, b2)."""
    A, B, C = X[tris[:, 0]], X[tris[:, 1]], X[tris[:, 2]]
    e1, e2 = B - A, C - A
    out_t = np.full(len(dirs), np.inf)
    out_i = np.full(len(dirs), -1)
    out_b = np.zeros((len(dirs), 2))
    for k, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = (e1 * p).sum(1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = -A
        u = (s * p).sum(1) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = (q * e2).sum(1) * inv
        hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
        if hit.any():
            j = np.flatnonzero(hit)[np.argmin(t[hit])]
            out_t[k], out_i[k], out_b[k] = t[j], j, (u[j], v[j])
    return out_t, out_i, out_b


# -- rasteriser ---------------------------------------------------------------------------------
def test_rasterize_triangle_coverage_and_perspective_bary():
    R, f = 48, 60.0
    # a tilted triangle: z varies strongly so affine and perspective interpolation differ
    X = np.array([[-40.0, -30.0, 100.0], [50.0, -20.0, 220.0], [-10.0, 45.0, 160.0]])
    T = np.array([[0, 1, 2]])
    tri_id, bary, depth = rasterize(X, T, f, R)
    uv = f * X[:, :2] / X[:, 2:] + R / 2
    yy, xx = np.mgrid[0:R, 0:R] + 0.5
    P = np.stack([xx.ravel(), yy.ravel()], 1)
    d = np.linalg.solve(np.array([[uv[0, 0] - uv[2, 0], uv[1, 0] - uv[2, 0]],
                                  [uv[0, 1] - uv[2, 1], uv[1, 1] - uv[2, 1]]]), (P - uv[2]).T).T
    inside = (d[:, 0] > 1e-6) & (d[:, 1] > 1e-6) & (d.sum(1) < 1 - 1e-6)
    strictly_out = (d[:, 0] < -1e-6) | (d[:, 1] < -1e-6) | (d.sum(1) > 1 + 1e-6)
    cov = (tri_id >= 0).ravel()
    assert cov[inside].all() and not cov[strictly_out].any()
    # the 3D point of each pixel's barycentrics lies on the ray through the pixel centre
    m = tri_id >= 0
    Pt = bary[m] @ X
    proj = f * Pt[:, :2] / Pt[:, 2:] + R / 2
    np.testing.assert_allclose(proj, np.stack([xx[m], yy[m]], 1), atol=1e-3)
    np.testing.assert_allclose(Pt[:, 2], depth[m], rtol=1e-5)
    assert np.abs(bary[m].sum(1) - 1).max() < 1e-5


def test_rasterize_nearest_wins_and_culling():
    R, f = 16, 20.0
    quad = np.array([[-50, -50, 0], [50, -50, 0], [50, 50, 0], [-50, 50, 0]], float)
    near, far = quad + [0, 0, 100], quad + [0, 0, 200]
    X = np.concatenate([far, near])
    T = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    tri_id, _, depth = rasterize(X, T, f, R)
    assert set(np.unique(tri_id)) <= {2, 3} and np.allclose(depth, 100.0)
    # these triangles are counter-clockwise in the x-right/y-down image: back faces
    tri_id, _, _ = rasterize(X, T, f, R, cull_backfaces=True)
    assert (tri_id < 0).all()
    tri_id, _, _ = rasterize(X, T[:, ::-1], f, R, cull_backfaces=True)
    assert set(np.unique(tri_id)) <= {2, 3} and (tri_id >= 0).all()


def test_rasterize_fast_paths_match_torch():
    """The CPU shortcuts of the rasteriser are bit-exact stand-ins for the torch calls, and the
    cached triangle columns of a read-only array never go stale."""
    import torch

    from pix2vertex_addon.training.synth.raster import _nonzero, _take, _where

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    x[::7], y[::11], x[5] = float("nan"), float("inf"), -0.0
    cond = torch.rand(1000, generator=g) > 0.5
    assert torch.equal(_where(cond, x, y).view(torch.int32), torch.where(cond, x, y).view(torch.int32))
    assert torch.equal(_nonzero(cond), torch.nonzero(cond).squeeze(1))
    idx = torch.randint(0, 1000, (300,), generator=g)
    assert torch.equal(_take(y, idx), y[idx])

    R, f = 16, 20.0
    X = np.array([[-50, -50, 100], [50, -50, 100], [50, 50, 100], [-50, 50, 100]], float)
    T = np.array([[0, 2, 1], [0, 3, 2]])
    T.setflags(write=False)
    first = rasterize(X, T, f, R).tri_id
    T2 = np.array([[0, 2, 1]])
    T2.setflags(write=False)
    assert (rasterize(X, T2, f, R).tri_id <= 0).all()  # another array: other columns
    assert np.array_equal(rasterize(X, T, f, R).tri_id, first)
    Tw = np.array(T)  # writeable arrays are converted on every call
    assert np.array_equal(rasterize(X, Tw, f, R).tri_id, first)
    Tw[:] = Tw[::-1].copy()  # the same array object, other contents
    swapped = rasterize(X, Tw, f, R).tri_id
    assert np.array_equal(swapped, rasterize(X, np.array(T[::-1]), f, R).tri_id)
    assert not np.array_equal(swapped, first)


# -- labels ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean_sample(model):
    return generate_sample(12345, 96, model=model, clean=True, return_raster=True,
                           yaw_deg=35.0, pitch_deg=-10.0, expression={"jawOpen": 0.6, "mouthSmile_L": 0.7})


def test_sample_contract(clean_sample):
    s, R = clean_sample, 96
    assert s["image"].shape == (R, R, 3) and s["image"].dtype == np.uint8
    for k in ("xyz", "corr"):
        assert s[k].shape == (R, R, 3) and s[k].dtype == np.float32
        assert (s[k][~s["mask"]] == 0).all()
    assert s["mask"].dtype == bool and 0.2 < s["mask"].mean() < 0.9
    assert s["vertices_cam"].shape == (9409, 3) and s["vertices_cam"].dtype == np.float32
    assert s["landmarks_2d"].shape == (68, 2) and s["landmarks_2d"].dtype == np.float32
    c = s["corr"][s["mask"]]
    assert c.min() >= 0 and c.max() <= 1
    meta = s["meta"]
    for k in ("identity", "expression", "rotation", "translation_mm", "focal_px", "z_ref_mm", "seed",
              "identity_id", "light"):
        assert k in meta
    R_ = meta["rotation"]
    np.testing.assert_allclose(R_ @ R_.T, np.eye(3), atol=1e-9)


def test_vertices_and_landmarks_match_model(model, clean_sample):
    meta = clean_sample["meta"]
    v = model.sample_face(meta["identity"], meta["expression"], region="face")
    Xc = (v * 10.0) @ meta["rotation"].T + meta["translation_mm"]
    np.testing.assert_allclose(Xc[:, 2].mean(), meta["z_ref_mm"], rtol=1e-9)
    Xl = Xc - [0, 0, meta["z_ref_mm"]]
    np.testing.assert_allclose(clean_sample["vertices_cam"], Xl, atol=1e-3)
    lm = Xc[model.template.landmarks_68]
    uv = meta["focal_px"] * lm[:, :2] / lm[:, 2:] + 96 / 2
    np.testing.assert_allclose(clean_sample["landmarks_2d"], uv, atol=1e-3)
    # clean: no crop jitter, the crop convention's box is the image
    np.testing.assert_allclose(crop_box_from_landmarks(uv), (0, 0, 96), atol=0.05)


def test_crop_jitter_within_convention(model):
    for seed in (3, 4):
        s = generate_sample(seed, 64, model=model)
        x0, y0, side = crop_box_from_landmarks(s["landmarks_2d"])
        m = s["meta"]
        assert abs(side / 64 - 1) <= 0.05 + 1e-3
        np.testing.assert_allclose(side, 64 * m["crop_scale"], atol=0.05)
        np.testing.assert_allclose([x0 + side / 2 - 32, y0 + side / 2 - 32], m["crop_shift"] * side, atol=0.05)


def test_every_label_pixel_projects_to_its_centre(clean_sample):
    s, R = clean_sample, 96
    m = s["mask"]
    P = s["xyz"][m].astype(np.float64) + [0, 0, s["meta"]["z_ref_mm"]]
    f = s["meta"]["focal_px"]
    uv = f * P[:, :2] / P[:, 2:] + R / 2
    rows, cols = np.nonzero(m)
    np.testing.assert_allclose(uv, np.stack([cols + 0.5, rows + 0.5], 1), atol=2e-3)


def test_vertex_projection_lands_on_its_pixel(model, clean_sample):
    s, R = clean_sample, 96
    meta = s["meta"]
    f, zr = meta["focal_px"], meta["z_ref_mm"]
    V = s["vertices_cam"].astype(np.float64) + [0, 0, zr]
    uv = f * V[:, :2] / V[:, 2:] + R / 2
    c, r = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    ok = (c >= 1) & (r >= 1) & (c < R - 1) & (r < R - 1)
    ok[ok] &= s["mask"][r[ok], c[ok]]
    # visible vertices: the pixel's depth agrees with the vertex within the pixel footprint
    px_mm = V[:, 2] / f
    lab = np.zeros_like(V)
    lab[ok] = s["xyz"][r[ok], c[ok]] + [0, 0, zr]
    vis = ok & (np.abs(lab[:, 2] - V[:, 2]) < 3 * px_mm)
    assert vis.sum() > 1000
    # the pixel's label is the surface point at the pixel centre: within a pixel of the vertex
    d_xy = np.linalg.norm(lab[vis, :2] - V[vis, :2], axis=1) / px_mm[vis]
    assert np.percentile(d_xy, 99) < 1.0
    # the correspondence label there is that vertex's canonical coordinate up to a pixel's
    # worth of surface (a pixel is ~2 mm at this resolution)
    canon = canonical_coordinates(model)
    scale = (model.template.vertices_cm.max(0) - model.template.vertices_cm.min(0)) * 10
    dc = np.abs(s["corr"][r[vis], c[vis]] - canon[vis]) * scale
    assert np.median(dc.max(1) / px_mm[vis]) < 1.0


def test_labels_against_ray_casting(model, clean_sample):
    """Depth, correspondence and mask at sampled pixels from independent ray casting."""
    s, R = clean_sample, 96
    meta = s["meta"]
    rm = render_mesh(model)
    X = _posed_render_vertices(model, meta)
    f, zr = meta["focal_px"], meta["z_ref_mm"]
    rng = np.random.default_rng(0)
    m = s["mask"]
    pix = np.concatenate([np.argwhere(m)[rng.choice(m.sum(), 60, replace=False)],
                          np.argwhere(~m)[rng.choice((~m).sum(), 30, replace=False)]])
    dirs = np.stack([(pix[:, 1] + 0.5 - R / 2) / f, (pix[:, 0] + 0.5 - R / 2) / f, np.ones(len(pix))], 1)
    t, tri, b = _ray_cast(X, rm.triangles, dirs)
    is_face = (tri >= 0) & (tri < rm.n_face_tris)
    np.testing.assert_array_equal(is_face, m[pix[:, 0], pix[:, 1]])
    hit = t[:, None] * dirs
    lab = s["xyz"][pix[:, 0], pix[:, 1]] + [0, 0, zr]
    np.testing.assert_allclose(lab[is_face], hit[is_face], atol=2e-3)
    canon = canonical_coordinates(model)
    tris = model.template.triangles()
    bb = np.stack([1 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], 1)
    ci = (canon[tris[tri[is_face]]] * bb[is_face][:, :, None]).sum(1)
    np.testing.assert_allclose(s["corr"][pix[:, 0], pix[:, 1]][is_face], ci, atol=1e-4)
    # the raster's own triangle ids agree with the ray caster (ties aside)
    assert (s["tri_id"][pix[:, 0], pix[:, 1]] == tri).mean() > 0.95


def test_occluders_are_outside_the_mask(model):
    for seed in range(40):
        s = generate_sample(seed, 64, model=model, degrade=False, return_raster=True)
        if any(s["meta"]["occluders"].values()):
            face = (s["tri_id"] >= 0) & (s["tri_id"] < s["meta"]["n_face_tris"])
            assert (s["mask"] <= face).all()
            assert s["mask"].sum() < face.sum()
            return
    pytest.fail("no occluder in 40 seeds")


def test_hair_is_outside_the_mask_and_sampled(model):
    styles, on_face, outside_head = [], 0, 0
    n = 40
    for seed in range(n):
        s = generate_sample(seed, 64, model=model, degrade=False, return_raster=True)
        face = (s["tri_id"] >= 0) & (s["tri_id"] < s["meta"]["n_face_tris"])
        hair = s["hair_alpha"] >= 0.5
        assert s["hair_alpha"].shape == (64, 64) and s["hair_alpha"].dtype == np.float32
        assert not (s["mask"] & hair).any()
        if not any(s["meta"]["occluders"].values()):  # exact: face region minus the hair
            np.testing.assert_array_equal(s["mask"], face & ~hair)
        h = s["meta"]["hair"]
        styles.append(h["style"])
        assert h["drawn"] == bool((s["hair_alpha"] > 0).any())
        on_face += bool((hair & face).any())
        outside_head += bool((hair & (s["tri_id"] < 0)).any())
    # hair volume is common, covers part of the head's face region and reaches past its outline
    assert {"cap", "long"} <= set(styles) and ({"none", "bald"} & set(styles))
    assert on_face > 0.4 * n and outside_head > 0.4 * n
    clean = generate_sample(3, 64, model=model, clean=True, return_raster=True)
    assert not clean["hair_alpha"].any() and not clean["meta"]["hair"]["drawn"]


def test_photo_backgrounds_never_use_test_images(monkeypatch):
    import hashlib

    from pix2vertex_addon.training.synth import appearance, photos

    assert not {Path(name).stem for _, _, name in photos.PHOTO_FILES} & photos.EXCLUDED
    assert {"astronaut", "camera", "grace_hopper"} <= photos.EXCLUDED
    srcs = photos.photo_sources()
    if not srcs:
        pytest.skip("scikit-image (its sample images) is not installed")
    assert not {p.stem for p in srcs} & photos.EXCLUDED
    # nor a copy of them under another name
    digest = lambda p: hashlib.sha1(p.read_bytes()).hexdigest()  # noqa: E731
    excluded = [p for pkg, folder in (("skimage", "data"), ("matplotlib", "mpl-data/sample_data"))
                if (d := photos._package_dir(pkg)) is not None for p in (d / folder).glob("*")
                if p.stem in photos.EXCLUDED]
    assert excluded, "the excluded test images should be found to compare against"
    assert not {digest(p) for p in srcs} & {digest(p) for p in excluded}
    # the backgrounds actually drawn: half photos, only from the allowed files
    kinds, used = [], set()
    for seed in range(200):
        img, info = appearance.background(rng_for(seed, "background"), 32, [0.8, 0.6, 0.5])
        assert img.shape == (32, 32, 3) and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0
        kinds.append(info["kind"])
        if info["kind"] == "photo":
            used.add(info["source"])
    assert 0.35 < kinds.count("photo") / len(kinds) < 0.65
    assert used <= {p.stem for p in srcs} and len(used) > 5
    # without the packages: procedural backgrounds only, and the generator still works
    monkeypatch.setattr(photos, "_sources", [])
    for seed in range(20):
        _, info = appearance.background(rng_for(seed, "background"), 32, [0.8, 0.6, 0.5])
        assert info["kind"] == "procedural"
    s = generate_sample(5, 32)
    assert s["meta"]["background"]["kind"] == "procedural" and s["image"].shape == (32, 32, 3)


# -- determinism, splits, ranges -------------------------------------------------------------------
def test_determinism_by_seed(model):
    a = generate_sample(7, 64, model=model)
    b = generate_sample(7, 64, model=model)
    for k in ("image", "xyz", "corr", "mask", "vertices_cam", "landmarks_2d"):
        np.testing.assert_array_equal(a[k], b[k])
    c = generate_sample(8, 64, model=model)
    assert not np.array_equal(a["image"], c["image"])
    # the scene does not depend on the resolution
    d = generate_sample(7, 80, model=model)
    np.testing.assert_array_equal(a["meta"]["identity"], d["meta"]["identity"])
    np.testing.assert_array_equal(a["meta"]["rotation"], d["meta"]["rotation"])
    np.testing.assert_allclose(a["vertices_cam"], d["vertices_cam"], rtol=1e-5, atol=1e-3)


def test_fixed_face_options(model):
    w = np.zeros(100)
    w[:3] = [1.0, -0.5, 0.25]
    s = generate_sample(1, 64, model=model, identity=w[:3], expression={}, yaw_deg=20, pitch_deg=0,
                        roll_deg=0, clean=True)
    np.testing.assert_array_equal(s["meta"]["identity"], w.astype(np.float32))
    v = model.sample_face(w, {}, region="face") * 10.0 @ s["meta"]["rotation"].T + s["meta"]["translation_mm"]
    np.testing.assert_allclose(s["vertices_cam"], v - [0, 0, s["meta"]["z_ref_mm"]], atol=1e-3)
    assert not s["meta"]["expression"].any()
    assert s["meta"]["yaw_deg"] == 20
    assert not any(s["meta"]["occluders"].values()) and not any(
        v for k, v in s["meta"]["degrade"].items() if isinstance(v, bool))


def test_splits_never_share_identities(model):
    names = list(SPLITS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = seed_range(a), seed_range(b)
            assert ra.stop <= rb.start or rb.stop <= ra.start
    assert split_of_seed(seed_range("val").start) == "val"
    assert split_of_seed(seed_range("train").stop - 1) == "train"
    with pytest.raises(ValueError):
        split_of_seed(-1)
    ids = {sp: {identity_id_of_seed(s) for s in list(seed_range(sp)[:200]) + list(seed_range(sp)[-200:])}
           for sp in names}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    # identity weights depend on the identity id only, and generated samples carry them
    s = generate_sample(seed_range("test").start + 5, 32, model=model)
    np.testing.assert_array_equal(s["meta"]["identity"],
                                  sample_identity(s["meta"]["identity_id"]).astype(np.float32))
    assert s["meta"]["split"] == "test"


def test_pose_ranges_are_sampled():
    poses = [sample_pose(rng_for(s, "pose")) for s in range(3000)]
    for k, lim in POSE_RANGES_DEG.items():
        a = np.array([p[k] for p in poses])
        assert a.min() >= -lim and a.max() <= lim
        assert a.min() < -0.9 * lim and a.max() > 0.9 * lim
    yaw = np.array([p["yaw"] for p in poses])
    assert (yaw > 60).mean() > 0.02 and (yaw < -60).mean() > 0.02
    pitch = np.array([p["pitch"] for p in poses])
    assert (pitch > 25).mean() > 0.02 and (pitch < -25).mean() > 0.02


def test_expression_ranges_are_sampled(model):
    exps = [sample_expression(rng_for(s, "expression")) for s in range(2000)]
    names = set(model.expression_names)
    assert all(set(e) <= names for e in exps)
    assert all(0 <= v <= 1 for e in exps for v in e.values())
    n_active = np.array([len(e) for e in exps])
    assert (n_active == 0).mean() > 0.05 and (n_active >= 3).mean() > 0.3
    seen = set().union(*exps)
    for k in ("jawOpen", "mouthSmile_L", "mouthSmile_R", "eyeBlink_L", "browInnerUp_R", "browDown_L",
              "mouthPucker", "eyeLookUp_L", "cheekPuff_R"):
        assert k in seen, k
    asym = sum(1 for e in exps if abs(e.get("mouthSmile_L", 0) - e.get("mouthSmile_R", 0)) > 0.3)
    assert asym > 50
    assert max(e.get("jawOpen", 0) for e in exps) > 0.8


def test_lighting_and_appearance_ranges_are_sampled(model):
    from pix2vertex_addon.training.synth import appearance, generator

    lights = [generator._sample_light(rng_for(s, "light")) for s in range(500)]
    d = np.array([lt["key_dir"] for lt in lights if lt["key"] > 0])
    assert d[:, 0].min() < -0.8 and d[:, 0].max() > 0.8  # from both sides
    assert d[:, 1].min() < -0.7 and d[:, 1].max() > 0.3  # from above and below
    soft = np.array([lt["shadow_soft_px"] for lt in lights])
    assert (soft < 1.2).mean() > 0.3 and (soft > 2.5).mean() > 0.1  # hard and soft shadows
    tones = np.array([appearance.sample_appearance(rng_for(s, "appearance"))["skin_tone"] for s in range(500)])
    assert tones.min() < 0.05 and tones.max() > 0.95
    # the image responds to the light: same face, different seeds' lights differ in brightness
    means = [generate_sample(s, 48, model=model, clean=True)["image"].mean() for s in range(6)]
    assert np.ptp(means) > 10


# -- datasets and CLI ---------------------------------------------------------------------------------
def test_make_dataset_resumable_and_readable(tmp_path, model):
    from pix2vertex_addon.training.synth.dataset import ShardDataset, make_dataset

    out = tmp_path / "ds"
    idx = make_dataset(out, count=5, resolution=32, seed=10, split="val", shard_size=2, progress=False)
    index = json.loads(idx.read_text())
    assert [s["count"] for s in index["shards"]] == [2, 2, 1]
    assert index["shards"][0]["first_seed"] == seed_range("val").start + 10
    files = sorted(out.glob("*.npz"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    files[-1].unlink()  # interrupted run: one shard missing
    make_dataset(out, count=5, resolution=32, seed=10, split="val", shard_size=2, progress=False)
    files2 = sorted(out.glob("*.npz"))
    assert [p.name for p in files2] == [p.name for p in files]
    assert [p.stat().st_mtime_ns for p in files2[:2]] == mtimes[:2]
    with pytest.raises(ValueError):
        make_dataset(out, count=5, resolution=64, seed=10, split="val", shard_size=2, progress=False)
    ds = ShardDataset(out)
    assert len(ds) == 5
    item = ds[4]
    assert item["image"].shape == (3, 32, 32) and item["xyz"].shape == (3, 32, 32)
    assert item["mask"].shape == (1, 32, 32)
    ref = generate_sample(int(item["seed"]), 32, model=model)
    np.testing.assert_array_equal(item["image"].numpy(), ref["image"].transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_allclose(item["xyz"].numpy(), ref["xyz"].transpose(2, 0, 1), atol=0.1)
    with np.load(files2[0]) as z:
        assert set(split_of_seed(int(x)) for x in z["seed"]) == {"val"}


def test_synth_dataset_picklable_and_split_bound(model):
    from pix2vertex_addon.training.synth import SynthDataset

    ds = SynthDataset("val", resolution=32, length=3, options={"clean": True})
    ds2 = pickle.loads(pickle.dumps(ds))
    item = ds2[1]
    assert item["image"].shape == (3, 32, 32) and item["corr"].shape == (3, 32, 32)
    assert split_of_seed(int(item["seed"])) == "val"
    ds2.set_epoch(1)
    assert int(ds2[1]["seed"]) == int(item["seed"]) + 3


@pytest.mark.slow
def test_synth_does_not_import_bpy():
    code = ("import sys; import pix2vertex_addon.training.synth as s; from pix2vertex_addon.training.synth "
            "import SynthDataset, dataset; assert 'bpy' not in sys.modules, 'bpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
