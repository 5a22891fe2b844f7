#!/usr/bin/env python
"""Benchmark of the geometry core (target mesh, affine RANSAC, registration, fine detail).

Prints a table for the face-region template (9,409 vertices) against 256x256 and 512x512 exact
synthetic maps (yaw 30, jawOpen 1.0, broad smile, an identity the template has never seen), and
the speed ratio against ``trimesh.registration.nricp_amberg`` on the same registration problem
(same affine-fitted source, same target mesh, the correspondence pairs as its landmarks).

trimesh is a development dependency only. By default it runs a reduced schedule (its default
four stiffness steps, ``--trimesh-iters`` iterations each instead of up to 10) and the per-
iteration cost is extrapolated to its full default schedule (4 steps x 10 iterations); pass
``--trimesh-full`` to run the full schedule instead.

Usage::

    .venv/bin/python scripts/bench_geometry.py [--repeats 3] [--trimesh-iters 1] [--trimesh-full]
    .venv/bin/python scripts/bench_geometry.py --png docs/geometry_stages.png   # figure only
    .venv/bin/python scripts/bench_geometry.py --sweep 10   # accuracy over 10 random cases

``--png`` renders (headless, software rasteriser) the stages on a hard case (yaw 45, jawOpen 1.0,
broad smile, unseen identity): photo, target mesh, affine fit, registered template, detailed
result, ground truth; top row from the camera, bottom row turned 60 degrees towards the side the camera did not see.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pix2vertex_addon.core.atomic import atomic_file  # noqa: E402
from pix2vertex_addon.core.correspondence import canonical_coordinates, corr_to_mm_scale  # noqa: E402
from pix2vertex_addon.core.face_model import load_synth_face_model  # noqa: E402
from pix2vertex_addon.core.geometry import (  # noqa: E402
    apply_affine,
    build_target_mesh,
    corr_pairs,
    detail_field,
    feature_damping,
    fit_affine_ransac,
    register,
)
from pix2vertex_addon.training.synth.exact_maps import exact_maps  # noqa: E402

TRIMESH_DEFAULT_STEPS = [[0.01, 10, 0.5, 10], [0.02, 5, 0.5, 10], [0.03, 2.5, 0.5, 10],
                         [0.01, 0, 0.0, 10]]


def _best(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times), float(np.median(times))


def _trimesh(va, tris, target, ti, tj, iters, full):
    import trimesh
    from trimesh.registration import nricp_amberg

    src = trimesh.Trimesh(va, tris, process=False)
    tgt = trimesh.Trimesh(np.asarray(target.vertices), np.asarray(target.faces), process=False)
    steps = TRIMESH_DEFAULT_STEPS if full else [[a, b, c, iters] for a, b, c, _ in
                                                 TRIMESH_DEFAULT_STEPS]
    t = time.perf_counter()
    recs = nricp_amberg(src, tgt, source_landmarks=ti, target_positions=np.asarray(
        target.vertices)[tj], steps=steps, return_records=True)
    dt = time.perf_counter() - t
    n_it = len(recs) - 1
    per_it = dt / max(n_it, 1)
    total = dt if full else per_it * sum(s[3] for s in TRIMESH_DEFAULT_STEPS)
    return dt, n_it, per_it, total, recs[-1]


def _shade(vertices, tris, rot, size, centre, extent, colour):
    """Smooth-shaded grey render (H, W, 3) uint8 of a mesh (label frame, mm) turned by ``rot``."""
    from pix2vertex_addon.core.geometry import vertex_normals
    from pix2vertex_addon.training.synth.raster import interpolate, rasterize

    dist = 1500.0
    v = (vertices - centre) @ rot.T + np.array([0.0, 0.0, dist])
    focal = size * dist / (extent * 1.1)
    r = rasterize(v, tris, focal, size)
    n = vertex_normals(v, tris)
    nn = interpolate(n, tris, r.tri_id, r.bary)
    nn /= np.maximum(np.linalg.norm(nn, axis=-1, keepdims=True), 1e-9)
    light = np.array([-0.35, -0.45, -0.82])
    light /= np.linalg.norm(light)
    lam = np.abs((nn * light).sum(-1))
    img = np.full((size, size, 3), 255.0)
    m = r.tri_id >= 0
    col = np.asarray(colour, dtype=np.float64)
    if col.ndim == 2:  # per-vertex colours
        col = interpolate(col, tris, r.tri_id, r.bary)[m]
    img[m] = (0.15 + 0.85 * lam[m])[:, None] * col
    return np.clip(img, 0, 255).astype(np.uint8)


def _setup():
    """The face model, its template, canonical coordinates, corr-to-mm scale, the template's
    vertices in mm and its triangles: what every benchmark here starts from."""
    model = load_synth_face_model()
    T = model.template
    return model, T, canonical_coordinates(model), corr_to_mm_scale(model), T.vertices_cm * 10.0, T.triangles()


def render_png(path, resolution=256):
    from PIL import Image, ImageDraw

    model, T, canon, scale, tmpl, tris = _setup()
    ident = np.random.default_rng(1011).standard_normal(100)
    s = exact_maps(model, seed=11, resolution=resolution, identity=ident,
                   expression={"jawOpen": 1.0, "mouthSmile_L": 1.0, "mouthSmile_R": 1.0},
                   yaw_deg=45.0, pitch_deg=5.0, roll_deg=0.0)
    tm = build_target_mesh(s["xyz"], s["mask"], s["corr"], image=s["image"])
    A, _, _ = fit_affine_ransac(tmpl, canon, tm, corr_scale_mm=scale)
    va = apply_affine(A, tmpl)
    reg = register(va, T.faces, canon, tm, corr_scale_mm=scale)
    det = detail_field(reg.vertices, T.faces, tm, levels=2,
                       damping=feature_damping(tmpl, T.landmarks_68))
    from pix2vertex_addon.core.geometry import triangulate
    gain = 5.0
    detailed = det.vertices + gain * det.displacement[:, None] * det.normals
    q = np.clip(det.detail / max(np.percentile(np.abs(det.detail), 99), 1e-6), -1, 1)
    grey = np.array([225.0, 225.0, 225.0])
    dcol = np.where(q[:, None] > 0, grey + q[:, None] * (np.array([235, 90, 60]) - grey),
                    grey - q[:, None] * (np.array([60, 110, 235]) - grey))
    gt = s["vertices_cam"].astype(np.float64)
    err = np.linalg.norm(reg.vertices - gt, axis=1)
    centre = gt.mean(axis=0)
    extent = float(np.ptp(gt[:, :2], axis=0).max())
    size = 300
    yaw = np.deg2rad(-60.0)
    views = [np.eye(3), np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0],
                                  [-np.sin(yaw), 0, np.cos(yaw)]])]
    panels = [
        ("target mesh", tm.vertices, tm.faces, (150, 190, 235)),
        ("affine fit (RANSAC)", va, tris, (235, 200, 150)),
        ("registered", reg.vertices, tris, (170, 225, 170)),
        (f"detailed (x{gain:g}); colour: detail term, red out, blue in", detailed, triangulate(det.faces), dcol),
        ("ground truth", gt, tris, (200, 170, 220)),
    ]
    W = size * (len(panels) + 1)
    canvas = Image.new("RGB", (W, 2 * size + 40), "white")
    photo = Image.fromarray(s["image"]).resize((size, size), Image.BILINEAR)
    canvas.paste(photo, (0, 20))
    draw = ImageDraw.Draw(canvas)
    draw.text((5, 3), f"input {resolution}px: yaw 45, jawOpen 1, smile", fill="black")
    for k, (name, v, f, col) in enumerate(panels):
        for row, rot in enumerate(views):
            im = _shade(v, f, rot, size, centre, extent, col)
            canvas.paste(Image.fromarray(im), ((k + 1) * size, 20 + row * size))
        draw.text(((k + 1) * size + 5, 3), name, fill="black")
    from scipy.spatial import cKDTree
    seen = cKDTree(tm.corr * scale).query(canon * scale)[0] < 1.0
    draw.text((5, 2 * size + 24), f"registered: mean error {err[seen].mean():.2f} mm over the "
              f"{seen.sum()} template vertices the camera saw, {err[~seen].mean():.2f} mm over the "
              f"{(~seen).sum()} it did not; target mesh {tm.n_vertices} vertices; bottom row: "
              "turned 60 degrees towards the side the camera did not see", fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        canvas.save(tmp)
    print(f"wrote {path}")


SWEEP_EXPRESSIONS = [
    {"jawOpen": 1.0},
    {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0},
    {"jawOpen": 1.0, "mouthSmile_L": 1.0, "mouthSmile_R": 1.0},
    {"mouthPucker": 1.0, "browInnerUp_L": 1.0, "browInnerUp_R": 1.0},
    {"jawOpen": 0.6, "mouthFunnel": 0.8, "eyeBlink_L": 1.0},
]


def accuracy_sweep(n, variants=None):
    """Registration accuracy over ``n`` random cases (unseen identity, yaw in [-45, 45], the
    generator's random pitch/roll, one of SWEEP_EXPRESSIONS), exact and degraded maps."""
    from scipy.spatial import cKDTree

    from pix2vertex_addon.core.geometry import RegistrationParams
    from pix2vertex_addon.training.synth.exact_maps import degrade_maps

    model, T, canon, scale, tmpl, _ = _setup()
    variants = variants or {"default": {}}
    print("| case | yaw | expression | seen | " + " | ".join(
        f"{name} exact: seen / unseen / max mm | {name} degraded" for name in variants) + " |")
    print("|---" * (4 + 2 * len(variants)) + "|")
    for k in range(n):
        rng = np.random.default_rng(500 + k)
        yaw = float(rng.uniform(-45, 45))
        expr = SWEEP_EXPRESSIONS[k % len(SWEEP_EXPRESSIONS)]
        try:
            s = exact_maps(model, seed=100 + k, resolution=256,
                           identity=rng.standard_normal(100), expression=expr, yaw_deg=yaw)
        except Exception as exc:  # the renderer is another module: report and go on
            print(f"| {k} | {yaw:.0f} | {'+'.join(expr)} | renderer failed: {exc!r} |")
            continue
        tm0 = build_target_mesh(s["xyz"], s["mask"], s["corr"])
        vis = cKDTree(tm0.corr * scale).query(canon * scale)[0] < 1.0
        gt = s["vertices_cam"].astype(np.float64)
        cells = []
        for params in variants.values():
            for deg in (False, True):
                d = degrade_maps(s, seed=k) if deg else s
                tm = build_target_mesh(d["xyz"], d["mask"], d["corr"])
                A, _, _ = fit_affine_ransac(tmpl, canon, tm, corr_scale_mm=scale)
                r = register(apply_affine(A, tmpl), T.faces, canon, tm,
                             RegistrationParams(**params), corr_scale_mm=scale)
                e = np.linalg.norm(r.vertices - gt, axis=1)
                cells.append(f"{e[vis].mean():.2f} / {e[~vis].mean():.2f} / {e.max():.0f}")
        print(f"| {k} | {yaw:.0f} | {'+'.join(expr)} | {vis.mean():.0%} | " + " | ".join(cells)
              + " |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trimesh-iters", type=int, default=1)
    ap.add_argument("--trimesh-full", action="store_true")
    ap.add_argument("--no-trimesh", action="store_true")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--png", help="only render the stages figure to this path")
    ap.add_argument("--sweep", type=int, default=0,
                    help="only print the registration accuracy over this many random cases")
    args = ap.parse_args(argv)
    if args.png:
        render_png(args.png)
        return
    if args.sweep:
        accuracy_sweep(args.sweep)
        return

    model, T, canon, scale, tmpl, tris = _setup()
    damp = feature_damping(tmpl, T.landmarks_68)
    ident = np.random.default_rng(2024).standard_normal(100)
    expr = {"jawOpen": 1.0, "mouthSmile_L": 1.0, "mouthSmile_R": 1.0}

    print(f"# bench_geometry  {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}"
          f"  cores={os.cpu_count()}  python {platform.python_version()}  numpy {np.__version__}")
    print(f"# template: {T.n_vertices} vertices, {len(T.faces)} quads; times: best of "
          f"{args.repeats} (median in parentheses), seconds")
    rows = [_bench_one(R, args, model, T, canon, scale, tmpl, tris, damp, ident, expr)
            for R in args.resolutions]
    _print_table(rows, args)


def _bench_one(R, args, model, T, canon, scale, tmpl, tris, damp, ident, expr):
    s = exact_maps(model, seed=7, resolution=R, identity=ident, expression=expr, yaw_deg=30.0,
                   pitch_deg=0.0, roll_deg=0.0)
    gt = s["vertices_cam"].astype(np.float64)
    tm, t_tm, m_tm = _best(lambda: build_target_mesh(s["xyz"], s["mask"], s["corr"],
                                                     image=s["image"]), args.repeats)
    (A, inl, info), t_af, m_af = _best(
        lambda: fit_affine_ransac(tmpl, canon, tm, corr_scale_mm=scale), args.repeats)
    va = apply_affine(A, tmpl)
    reg, t_rg, m_rg = _best(lambda: register(va, T.faces, canon, tm, corr_scale_mm=scale),
                            args.repeats)
    d1, t_d1, m_d1 = _best(lambda: detail_field(reg.vertices, T.faces, tm, levels=1,
                                                damping=damp), args.repeats)
    d2, t_d2, m_d2 = _best(lambda: detail_field(reg.vertices, T.faces, tm, levels=2,
                                                damping=damp), args.repeats)
    from scipy.spatial import cKDTree
    dd, _ = cKDTree(tm.corr * scale).query(canon * scale)
    vis = dd < 1.0
    err = np.linalg.norm(reg.vertices - gt, axis=1)
    row = dict(R=R, n_target=tm.n_vertices, n_tris=len(tm.faces), t_tm=t_tm, m_tm=m_tm,
               t_af=t_af, m_af=m_af, inl=info["n_inliers"], t_rg=t_rg, m_rg=m_rg,
               outer=reg.n_outer, solves=reg.n_solves, fact=reg.n_factorizations,
               t_d1=t_d1, m_d1=m_d1, n_d1=len(d1.vertices), t_d2=t_d2, m_d2=m_d2,
               n_d2=len(d2.vertices), err_vis=err[vis].mean(),
               err_aff=np.linalg.norm(va - gt, axis=1)[vis].mean(), err_invis=err[~vis].mean())
    if not args.no_trimesh:
        ti, tj, _ = corr_pairs(canon, tm, scale, 1.0)
        dt, n_it, per_it, total, v_tri = _trimesh(va, tris, tm, ti, tj, args.trimesh_iters,
                                                  args.trimesh_full)
        row.update(tri_run=dt, tri_iters=n_it, tri_per_it=per_it, tri_total=total,
                   tri_err=np.linalg.norm(v_tri - gt, axis=1)[vis].mean(),
                   ratio=total / t_rg)
    return row


def _print_table(rows, args):
    print()
    print("| target | target mesh | affine RANSAC (1000 it) | registration (outer / solves / LU) "
          "| fine detail L1 | fine detail L2 | trimesh nricp_amberg | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        tri = (f"{r['tri_total']:.1f} s ({'measured' if args.trimesh_full else 'extrapolated'}: "
               f"{r['tri_iters']} it in {r['tri_run']:.1f} s, {r['tri_per_it']:.2f} s/it)"
               if "ratio" in r else "-")
        sp_ = f"{r['ratio']:.0f}x" if "ratio" in r else "-"
        print(f"| {r['R']}x{r['R']} ({r['n_target']} v, {r['n_tris']} t) "
              f"| {r['t_tm']:.3f} ({r['m_tm']:.3f}) | {r['t_af']:.3f} ({r['m_af']:.3f}) "
              f"| {r['t_rg']:.3f} ({r['m_rg']:.3f}); {r['outer']} / {r['solves']} / {r['fact']} "
              f"| {r['t_d1']:.3f} ({r['m_d1']:.3f}); {r['n_d1']} v "
              f"| {r['t_d2']:.3f} ({r['m_d2']:.3f}); {r['n_d2']} v | {tri} | {sp_} |")
    print()
    for r in rows:
        extra = f", trimesh result {r['tri_err']:.2f} mm" if "tri_err" in r else ""
        print(f"accuracy {r['R']}: mean error of visible vertices: affine {r['err_aff']:.2f} mm -> "
              f"registered {r['err_vis']:.2f} mm (not visible: {r['err_invis']:.2f} mm){extra}")


if __name__ == "__main__":
    main()
