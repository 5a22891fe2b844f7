"""MediaPipe-478 landmarks in the fit: the map, the reprojection term, the guided registration."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core.geometry import RegistrationParams, build_target_mesh, register
from pix2vertex_addon.core.geometry.landmark_term import LandmarkTerm, project
from pix2vertex_addon.core.landmarks import N_MP, landmark_matrix, load_landmark_map
from pix2vertex_addon.training.synth.exact_maps import degrade_maps, exact_maps


def _term(v, seed=0, k=40, noise_px=0.0):
    rng = np.random.default_rng(seed)
    lmap = load_landmark_map()
    rows = np.flatnonzero(lmap.usable)[:k]
    tris = _tris()
    B = landmark_matrix(lmap, tris, len(v), rows)
    u = project(B @ v, 300.0, 600.0, 128) + rng.normal(0, 2.0 + noise_px, (len(rows), 2))
    return LandmarkTerm(B=B, target_px=u, weights=rng.uniform(0.2, 1.0, len(rows)), focal=300.0, z_ref=600.0,
                        resolution=128)


def _tris():
    from pix2vertex_addon.core.face_model import load_face_model

    return load_face_model().template.triangles()


def _template_mm():
    from pix2vertex_addon.core.correspondence import MODEL_TO_CAMERA
    from pix2vertex_addon.core.face_model import load_face_model

    return (load_face_model().template.vertices_cm * 10.0) @ MODEL_TO_CAMERA.T


def test_map_is_well_formed():
    lmap = load_landmark_map()
    tris = _tris()
    lmap.validate(len(tris))
    assert lmap.triangle.shape == (N_MP,)
    ok = lmap.triangle >= 0
    assert ok.sum() > 400  # nearly every face-mesh point lies on the face region
    np.testing.assert_allclose(lmap.bary[ok].sum(axis=1), 1.0, atol=1e-4)
    assert (lmap.bary[ok] >= -1e-4).all()
    assert not lmap.usable[468:].any()  # the irises are on the eyeballs, not the template
    # the face contour slides with the pose: it weighs less than the inner points
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    oval = np.unique(np.array(sorted(FACEMESH_FACE_OVAL)).ravel())
    inner = np.setdiff1d(np.arange(468), oval)
    assert np.median(lmap.weight[oval]) < 0.5 * np.median(lmap.weight[inner])


def test_gradient_matches_finite_differences():
    v = _template_mm()
    term = _term(v)
    g = term.gradient(v)
    rng = np.random.default_rng(1)
    touched = np.unique(term.B.indices)
    for i in rng.choice(touched, 6, replace=False):
        for d in range(3):
            e = np.zeros_like(v)
            e[i, d] = 1e-4
            fd = (term.energy(v + e) - term.energy(v - e)) / 2e-4
            assert g[i, d] == pytest.approx(fd, rel=1e-5, abs=1e-6)
    # untouched vertices have no gradient
    assert np.abs(np.delete(g, touched, axis=0)).max() == 0.0


def test_linearised_quadratic_has_the_true_gradient():
    v = _template_mm()
    term = _term(v, seed=2)
    w = term.weights
    m, gq = term.linearize(v, w)

    def quad(x):
        p = term.B @ x
        return float(np.einsum("ki,kij,kj->", p, m, p) - 2 * (gq * p).sum())

    grad_q = 2 * (term.B.T @ (np.einsum("kij,kj->ki", m, term.B @ v) - gq))
    np.testing.assert_allclose(grad_q, term.gradient(v), rtol=1e-6, atol=1e-8)
    # and the quadratic's finite differences agree with it
    i = int(term.B.indices[0])
    e = np.zeros_like(v)
    e[i, 2] = 1e-3
    assert (quad(v + e) - quad(v - e)) / 2e-3 == pytest.approx(grad_q[i, 2], rel=1e-5)


def test_depth_term_gradient_matches_finite_differences():
    v = _template_mm()
    term0 = _term(v, seed=4)
    rng = np.random.default_rng(5)
    depth = (term0.B @ v)[:, 2] + rng.normal(0, 3.0, term0.B.shape[0])
    depth[::7] = np.nan  # unknown depths take no part
    term = LandmarkTerm(B=term0.B, target_px=term0.target_px, weights=term0.weights, focal=300.0, z_ref=600.0,
                        resolution=128, depth_mm=depth)
    w = term.depth_weights(v, np.ones(len(depth), dtype=bool), huber_mm=2.0)
    assert (w[::7] == 0).all() and (w[1::7] > 0).all()
    g = term.depth_gradient(v, w)
    touched = np.unique(term.B.indices)
    for i in rng.choice(touched, 6, replace=False):
        for d in range(3):
            e = np.zeros_like(v)
            e[i, d] = 1e-4
            fd = (term.depth_energy(v + e, w) - term.depth_energy(v - e, w)) / 2e-4
            assert g[i, d] == pytest.approx(fd, rel=1e-5, abs=1e-6)
    assert np.abs(g[:, :2]).max() == 0.0  # depth only moves points along z
    # the quadratic handed to the solver has the same gradient
    m, gq = term.linearize_depth(w)
    grad_q = 2 * (term.B.T @ (np.einsum("kij,kj->ki", m, term.B @ v) - gq))
    np.testing.assert_allclose(grad_q, g, rtol=1e-6, atol=1e-8)


def test_depth_scale_and_shift_fit_is_robust():
    from pix2vertex_addon.core.geometry.landmark_term import fit_scale_shift

    rng = np.random.default_rng(6)
    x = rng.uniform(-40, 40, 300)
    y = 2.5 * x + 30.0 + rng.normal(0, 0.3, 300)
    y[:40] += rng.uniform(20, 60, 40)  # a seventh of the points far off (the detector's failures)
    s, t = fit_scale_shift(x, y, np.ones(300), huber=2.0)
    assert s == pytest.approx(2.5, rel=0.02) and t == pytest.approx(30.0, abs=1.0)
    assert fit_scale_shift(x, -y, np.ones(300), huber=2.0) is None  # depth the wrong way round
    assert fit_scale_shift(x[:5], y[:5], np.ones(5), huber=2.0) is None


def test_contour_scale_and_depth_weight_change_the_fit_only_as_asked():
    from dataclasses import replace

    from pix2vertex_addon.core.correspondence import canonical_coordinates, corr_to_mm_scale
    from pix2vertex_addon.core.face_model import load_face_model

    model = load_face_model()
    s = exact_maps(model, seed=1_000_900_051, resolution=64)
    target = build_target_mesh(s["xyz"], s["mask"], s["corr"])
    truth = s["vertices_cam"].astype(np.float64)
    init = truth + np.array([3.0, -2.0, 4.0])
    term = _term(truth, seed=7)
    kw = dict(corr_scale_mm=corr_to_mm_scale(model), params=None)
    canon = canonical_coordinates(model)

    def fit(params, t):
        return register(init, model.template.faces, canon, target, **{**kw, "params": params}, landmarks=t).vertices

    dense = fit(RegistrationParams(max_outer=4), None)
    guided = RegistrationParams(max_outer=4, w_landmark=1.0)
    every = replace(term, contour=np.ones(len(term.weights), dtype=bool))
    # every point on the "contour" with scale 0: no landmark pull at all
    np.testing.assert_allclose(fit(replace(guided, landmark_contour_scale=0.0), every), dense, atol=1e-9)
    assert np.abs(fit(guided, every) - dense).max() > 0.1
    # the depth weight acts only with a depth; without one the fit is the guided one
    np.testing.assert_array_equal(fit(replace(guided, w_landmark_depth=1.0), term), fit(guided, term))
    with pytest.raises(ValueError, match="w_landmark_depth"):
        RegistrationParams(w_landmark_depth=-1.0).validate()


def test_face_oval_is_mediapipes():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    from pix2vertex_addon.core.landmarks import FACE_OVAL

    edges = {frozenset(e) for e in FACEMESH_FACE_OVAL}
    assert len(FACE_OVAL) == 36 == len(set(FACE_OVAL))
    assert all(frozenset((a, b)) in edges for a, b in zip(FACE_OVAL, FACE_OVAL[1:] + FACE_OVAL[:1]))


def test_robust_weights_gate_the_far_side():
    v = _template_mm()
    lmap = load_landmark_map()
    rows = np.flatnonzero(lmap.usable)
    B = landmark_matrix(lmap, _tris(), len(v), rows)
    u = project(B @ v, 300.0, 600.0, 128)
    term = LandmarkTerm(B=B, target_px=u, weights=np.ones(len(rows)), focal=300.0, z_ref=600.0, resolution=128)
    from pix2vertex_addon.core.geometry import vertex_normals

    n = vertex_normals(v, _tris())
    if np.mean(n[:, 2]) > 0:  # orient out of the face, towards the camera at -z
        n = -n
    w = term.robust_weights(v, n, huber_px=2.0, min_cos=0.2)
    assert (w > 0).mean() > 0.8  # frontal: nearly all visible
    assert np.allclose(w[w > 0], 1.0)  # zero residual: full weight
    far = term.robust_weights(v, -n, huber_px=2.0, min_cos=0.2)
    assert (far > 0).mean() < 0.2
    shifted = LandmarkTerm(B=B, target_px=u + 8.0, weights=np.ones(len(rows)), focal=300.0, z_ref=600.0,
                           resolution=128)
    ws = shifted.robust_weights(v, n, huber_px=2.0, min_cos=0.2)
    np.testing.assert_allclose(ws[w > 0], 2.0 / np.hypot(8.0, 8.0), rtol=1e-6)


def _rot_y(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@pytest.mark.slow
def test_guided_fit_recovers_a_perturbed_pose():
    from pix2vertex_addon.core.camera import fit_pinhole, rigid_fit
    from pix2vertex_addon.core.correspondence import canonical_coordinates, corr_to_mm_scale
    from pix2vertex_addon.core.face_model import load_face_model

    model = load_face_model()
    tris = model.template.triangles()
    s = exact_maps(model, seed=1_000_900_001, resolution=128, yaw_deg=15.0)
    noisy = degrade_maps(s, seed=3, depth_noise_mm=0.5, corr_outlier_fraction=0.3)
    target = build_target_mesh(noisy["xyz"], noisy["mask"], noisy["corr"])
    truth = s["vertices_cam"].astype(np.float64)
    tmpl = model.template.vertices_cm * 10.0
    rot, t = rigid_fit(tmpl, truth)
    c = truth.mean(axis=0)
    init = ((tmpl @ rot.T + t) - c) @ _rot_y(10.0).T + c + np.array([6.0, -4.0, 0.0])
    focal, z_ref, _ = fit_pinhole(s["xyz"], s["mask"])
    lmap = load_landmark_map()
    rows = np.flatnonzero(lmap.usable)
    B = landmark_matrix(lmap, tris, len(tmpl), rows)
    term = LandmarkTerm(B=B, target_px=project(B @ truth, focal, z_ref, 128), weights=lmap.weight[rows],
                        focal=focal, z_ref=z_ref, resolution=128)
    canon = canonical_coordinates(model)
    scale = corr_to_mm_scale(model)

    def err(v):
        return float(np.linalg.norm(v - truth, axis=1).mean())

    dense = register(init, model.template.faces, canon, target, corr_scale_mm=scale)
    guided = register(init, model.template.faces, canon, target, corr_scale_mm=scale, landmarks=term,
                      params=RegistrationParams(w_landmark=1.0))
    px = np.linalg.norm(term.residuals(guided.vertices), axis=1)
    assert err(init) > 10.0
    assert np.median(px) < 0.5
    assert err(guided.vertices) < 3.0
    assert err(guided.vertices) < err(dense.vertices)


@pytest.mark.slow
def test_map_reproduces_known_correspondences():
    """On renders of identities the map was not derived from, the template point under each
    detected MediaPipe point (known from the render's labels) is where the map says."""
    import importlib.util
    from pathlib import Path

    from pix2vertex_addon.core.detect import FaceDetector
    from pix2vertex_addon.core.face_model import load_face_model
    from pix2vertex_addon.training.synth.generator import generate_sample

    spec = importlib.util.spec_from_file_location(
        "derive_landmark_map", Path(__file__).resolve().parents[1] / "scripts" / "derive_landmark_map.py")
    assert spec is not None and spec.loader is not None
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    model = load_face_model()
    tris = model.template.triangles()
    verts = model.template.vertices_cm * 10.0
    lmap = load_landmark_map()
    mapped = lmap.points(verts, tris)
    det = FaceDetector()
    good = lmap.usable & (lmap.weight >= 0.2)
    errs, shuffled = [], []
    rng = np.random.default_rng(0)
    for seed in (1_000_900_011, 1_000_900_012):  # not among the derivation's seeds
        s = generate_sample(seed, 256, model, clean=True, return_raster=True, yaw_deg=0.0, pitch_deg=0.0)
        pts = derive.detect_points(det, s["image"])
        assert pts is not None
        true, _, _ = derive.surface_points(s, pts, tris, verts)
        ok = good & np.isfinite(true[:, 0])
        errs.append(np.linalg.norm(true[ok] - mapped[ok], axis=1))
        perm = rng.permutation(np.flatnonzero(ok))
        shuffled.append(np.linalg.norm(true[ok] - mapped[perm], axis=1))
    det.close()
    e = np.concatenate(errs)
    assert len(e) > 300
    assert np.median(e) < 3.0 and np.quantile(e, 0.9) < 7.5
    assert np.median(np.concatenate(shuffled)) > 10 * np.median(e)


def test_landmarks_json_keeps_both_sets():
    from pix2vertex_addon.core.results import landmarks_doc

    fitted = np.zeros((68, 2))
    doc = landmarks_doc(fitted, np.ones((478, 2)))
    assert set(doc) == {"landmarks_68", "detected_478"} and doc["detected_478"].shape == (478, 2)
    assert set(landmarks_doc(fitted, np.ones((68, 2)))) == {"landmarks_68"}  # not MediaPipe's points


def _jaw_setup(yaw):
    from pix2vertex_addon.core.face_model import load_face_model
    from pix2vertex_addon.core.landmarks import fitted_landmarks_68

    model = load_face_model()
    t = model.template
    s = exact_maps(model, seed=1_000_900_031, resolution=128, yaw_deg=yaw, expression={})
    args = (s["vertices_cam"].astype(np.float64), t.triangles(), t.landmarks_68,
            s["meta"]["focal_px"], s["meta"]["z_ref_mm"], 128)
    return s, fitted_landmarks_68(*args), fitted_landmarks_68(*args, contour=False)


def test_jaw_points_lie_on_the_outline_of_a_turned_face():
    from scipy import ndimage

    # frontal: the outline is where the fixed jaw landmarks are (within a few pixels)
    _, contour, fixed = _jaw_setup(0.0)
    np.testing.assert_allclose(contour[17:], fixed[17:])
    assert np.median(np.linalg.norm(contour[:17] - fixed[:17], axis=1)) < 3.0
    # turned 35 degrees: the far side's fixed points are hidden behind the cheek; the contour
    # points lie on the rendered face's outline (distance to the covered region's border)
    s, contour, fixed = _jaw_setup(35.0)
    from pix2vertex_addon.core.face_model import load_face_model
    from pix2vertex_addon.training.synth.raster import rasterize

    cam = s["vertices_cam"].astype(np.float64) + [0.0, 0.0, s["meta"]["z_ref_mm"]]
    covered = rasterize(cam, load_face_model().template.triangles(), s["meta"]["focal_px"], 128,
                        cull_backfaces=True).tri_id >= 0  # the template's own silhouette
    covered = ndimage.binary_fill_holes(covered)  # the outer outline only (not eyes, mouth)
    border = covered & ~ndimage.binary_erosion(covered)
    by, bx = np.nonzero(border)
    bpts = np.stack([bx + 0.5, by + 0.5], axis=1)

    def to_border(p):
        return np.min(np.linalg.norm(bpts[None] - p[:, None], axis=2), axis=1)

    moved = np.linalg.norm(contour[:17] - fixed[:17], axis=1) > 2.0
    assert moved.sum() >= 4  # the far side moved to the outline
    assert np.median(to_border(contour[:17][moved])) < 2.0
    assert np.median(to_border(fixed[:17][moved])) > 4.0


def test_jaw_points_move_onto_the_visible_face():
    """visible_jaw: a point where the mask is low moves along its line towards the centre to the
    mask's edge; points on the mask stay; with no edge within reach (0.6 of the distance) a
    point stays; the mask's resolution may differ from the crop's."""
    from pix2vertex_addon.core.landmarks import visible_jaw

    res = 128
    yy, xx = np.mgrid[0:256, 0:256]
    mask = ((xx + 0.5 - 128) ** 2 + (yy + 0.5 - 128) ** 2 < 80.0**2).astype(np.float32)  # radius 40 crop px
    centre = np.array([64.0, 64.0])
    points = np.array([[64.0 + 50.0, 64.0], [64.0, 64.0 - 45.0], [64.0 + 30.0, 64.0], [64.0 - 120.0, 64.0]])
    out = visible_jaw(points, centre, mask, res)
    r = np.linalg.norm(out - centre, axis=1)
    assert abs(r[0] - 40.0) < 0.6 and abs(r[1] - 40.0) < 0.6  # onto the edge, along their lines
    np.testing.assert_allclose(out[0, 1], 64.0)
    np.testing.assert_allclose(out[1, 0], 64.0)
    np.testing.assert_array_equal(out[2], points[2])  # on the face already
    np.testing.assert_array_equal(out[3], points[3])  # the edge (r 40) is nearer than 0.6 x 120


def test_affine_uses_landmark_pairs():
    from pix2vertex_addon.core.correspondence import canonical_coordinates, corr_to_mm_scale
    from pix2vertex_addon.core.face_model import load_face_model
    from pix2vertex_addon.core.geometry import fit_affine_ransac

    model = load_face_model()
    s = exact_maps(model, seed=1_000_900_041, resolution=96)
    target = build_target_mesh(s["xyz"], s["mask"], s["corr"])
    tmpl = model.template.vertices_cm * 10.0
    canon, scale = canonical_coordinates(model), corr_to_mm_scale(model)
    a0, _, _ = fit_affine_ransac(tmpl, canon, target, corr_scale_mm=scale, iterations=200)
    truth = s["vertices_cam"].astype(np.float64)
    idx = np.arange(0, len(tmpl), 50)
    # exact landmark pairs pull the fit to them; with zero weight the fit is unchanged
    a1, _, info = fit_affine_ransac(tmpl, canon, target, corr_scale_mm=scale, iterations=200,
                                    extra=(tmpl[idx], truth[idx], np.full(len(idx), 50.0)))
    a2, _, _ = fit_affine_ransac(tmpl, canon, target, corr_scale_mm=scale, iterations=200,
                                 extra=(tmpl[idx], truth[idx], np.zeros(len(idx))))
    from pix2vertex_addon.core.geometry import apply_affine

    def err(a):
        return float(np.linalg.norm(apply_affine(a, tmpl[idx]) - truth[idx], axis=1).mean())

    assert err(a1) < err(a0)
    np.testing.assert_allclose(a2, a0)
    with pytest.raises(ValueError, match="extra pairs"):
        fit_affine_ransac(tmpl, canon, target, corr_scale_mm=scale, iterations=10,
                          extra=(tmpl[:3], truth[:4], np.ones(3)))


def test_camera_refit_follows_the_landmark_pairs_by_their_share():
    """``fit_pinhole(extra=...)``: the landmark pairs pull the camera towards the one they were
    projected with as their share grows; with share 0 the camera is the maps' own, exactly."""
    from pix2vertex_addon.core.camera import fit_pinhole
    from pix2vertex_addon.core.face_model import load_face_model

    model = load_face_model()
    s = exact_maps(model, seed=1_000_900_002, resolution=96)
    f0, z0, rms0 = fit_pinhole(s["xyz"], s["mask"])
    truth = s["vertices_cam"].astype(np.float64)
    pts = truth[::150]  # 63 surface points standing in for the landmarks
    f1, z1 = f0 * 1.1, z0 * 1.1  # another camera: the same scale at the face, less perspective
    px = project(pts, f1, z1, 96)
    w = np.ones(len(pts))
    assert fit_pinhole(s["xyz"], s["mask"], extra=(pts, px, w), extra_share=0.0) == (f0, z0, rms0)
    fits = [fit_pinhole(s["xyz"], s["mask"], extra=(pts, px, w), extra_share=k)[:2] for k in (0.1, 1.0, 100.0)]
    dist = [abs(f - f1) / f1 + abs(z - z1) / z1 for f, z in fits]
    assert dist[0] > dist[1] > dist[2] and dist[2] < 0.02
    assert abs(fits[0][0] - f0) / f0 < 0.1  # a small share moves it little


def test_landmarks_off_in_the_last_levels():
    """``landmark_last_levels``: the landmark term is out of the quadratic exactly in the last
    stiffness levels; with every level off the fit is the dense-only one, and with the factor
    1 the option changes nothing."""
    from dataclasses import replace

    from pix2vertex_addon.core.correspondence import canonical_coordinates, corr_to_mm_scale
    from pix2vertex_addon.core.face_model import load_face_model

    model = load_face_model()
    s = exact_maps(model, seed=1_000_900_051, resolution=64)
    target = build_target_mesh(s["xyz"], s["mask"], s["corr"])
    truth = s["vertices_cam"].astype(np.float64)
    init = truth + np.array([3.0, -2.0, 4.0])
    term = _term(truth, seed=7, noise_px=3.0)
    canon = canonical_coordinates(model)
    # a short schedule: 4 levels (1e8 ... 1.25e7 >= 1e7), at most 2 outer iterations each
    base = RegistrationParams(a_memb_stop=1e7, max_outer_per_level=2, w_landmark=1.0)

    def fit(params, t=term):
        return register(init, model.template.faces, canon, target, params=params, landmarks=t,
                        corr_scale_mm=corr_to_mm_scale(model), return_records=True)

    guided = fit(base)
    late = fit(replace(base, landmark_last_levels=2))
    levels = sorted({r["a_memb"] for r in late.records}, reverse=True)
    assert len(levels) == 4
    for r in late.records:  # on in the first two levels, off in the last two
        assert r["landmarks"] == (r["a_memb"] >= levels[1])
        assert r["landmark_scale"] == (1.0 if r["a_memb"] >= levels[1] else 0.0)
    assert all(r["landmarks"] for r in guided.records)
    # the first two levels are the guided fit's, then the fits part
    n_on = sum(r["landmarks"] for r in late.records)
    np.testing.assert_array_equal(late.records[n_on - 1]["vertices"], guided.records[n_on - 1]["vertices"])
    assert np.abs(late.vertices - guided.vertices).max() > 0.01
    # every level off: the dense-only fit; factor 1: the guided fit
    np.testing.assert_array_equal(fit(replace(base, landmark_last_levels=4)).vertices, fit(base, None).vertices)
    np.testing.assert_array_equal(fit(replace(base, landmark_last_levels=2, landmark_last_scale=1.0)).vertices,
                                  guided.vertices)
    half = fit(replace(base, landmark_last_levels=2, landmark_last_scale=0.5))
    assert {r["landmark_scale"] for r in half.records} == {1.0, 0.5}
    with pytest.raises(ValueError, match="landmark_last_levels"):
        RegistrationParams(landmark_last_levels=-1).validate()


def test_reprojection_term_is_blind_along_the_viewing_ray():
    """The reprojection term moves points only across their line of sight: its Jacobian (and so
    the Gauss-Newton quadratic) has the ray through the camera centre as its null space."""
    from pix2vertex_addon.core.geometry.landmark_term import projection_jacobian

    rng = np.random.default_rng(0)
    p = rng.normal(0, 40, (50, 3))
    z_ref = 600.0
    j = projection_jacobian(p, 300.0, z_ref)
    ray = p + np.array([0.0, 0.0, z_ref])  # camera centre at -z_ref on the axis
    np.testing.assert_allclose(np.einsum("kij,kj->ki", j, ray), 0.0, atol=1e-9)
    # ... but not along the optical axis for points off it (a ray is not the z axis)
    assert np.abs(np.einsum("kij,j->ki", j, np.array([0.0, 0.0, 1.0]))).max() > 0.01
