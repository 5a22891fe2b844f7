"""Derive the MediaPipe-478 -> template map (``pix2vertex_addon/core/mp478_map.npz``).

    .venv/bin/python scripts/derive_landmark_map.py [--n 24] [--out PATH] [--first-seed S]

Renders synthetic faces of held-out identities (validation seeds; never the test split) with the
project's generator, runs MediaPipe's face mesh (core/detect.py) on each, and reads the true
template point under every detected point from the render's labels (triangle id and barycentric
coordinates of the pixel). Per identity four views: frontal neutral, near-frontal with a random
expression, and the head turned 30 degrees to either side. Per point:

* the surface position (neutral template, mm) of each view; the map's point is the view whose
  position is nearest the coordinate-wise median of the frontal views (so it lies on the surface);
* ``spread_mm``: median distance of the frontal views' positions to it (identity scatter);
* ``slide_mm``: the smaller distance of the two turned views' medians to it (how far the point
  slides on the surface with the pose on the side turned towards the camera: large on the face
  contour, which follows the occluding outline; on the side turned away the fit gates points by
  their normal instead), ``far_slide_mm`` the larger (reported only);
* ``weight`` = 1 / (1 + (spread^2 + slide^2) / s0^2) with s0 = 2 mm, 0 for points off the face
  region in more than 30 % of the views (points beyond the template) and for the ten iris
  points (they follow the gaze).

Prints the figures by region (docs/reference/landmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

S0_MM = 2.0
MIN_HIT = 0.7
N_IRIS = 468  # points 468-477 are the irises
PAD = 128  # px of replicated border around each 256-px render (MediaPipe needs context)


def face_oval() -> np.ndarray:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    return np.unique(np.array(sorted(FACEMESH_FACE_OVAL)).ravel())


def views(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [dict(yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, expression={}, kind="frontal"),
            dict(yaw_deg=float(rng.uniform(-8, 8)), pitch_deg=float(rng.uniform(-8, 8)), roll_deg=0.0,
                 kind="frontal"),
            dict(yaw_deg=-30.0, pitch_deg=0.0, roll_deg=0.0, expression={}, kind="left"),
            dict(yaw_deg=30.0, pitch_deg=0.0, roll_deg=0.0, expression={}, kind="right")]


def surface_points(sample: dict, pts: np.ndarray, tris: np.ndarray, verts_mm: np.ndarray):
    """(478, 3) neutral-template positions under the detected points (NaN off the face), their
    (triangle, bary)."""
    r = sample["image"].shape[0]
    ij = np.clip(np.floor(pts).astype(np.int64), 0, r - 1)
    tid = sample["tri_id"][ij[:, 1], ij[:, 0]]
    bary = sample["bary"][ij[:, 1], ij[:, 0]].astype(np.float64)
    ok = (tid >= 0) & (tid < sample["meta"]["n_face_tris"])
    pos = np.full((len(pts), 3), np.nan)
    pos[ok] = np.einsum("nk,nkd->nd", bary[ok], verts_mm[tris[tid[ok]]])
    return pos, np.where(ok, tid, -1), bary


def detect_points(det, image: np.ndarray) -> np.ndarray | None:
    from pix2vertex_addon.core.detect import NoFaceError

    big = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")
    try:
        return det.detect(big)[0].landmarks_478 - PAD
    except NoFaceError:
        return None


def collect(seeds, model, det) -> dict:
    """Per view kind: lists of (478, 3) positions, (478,) triangles, (478, 3) barycentrics."""
    from pix2vertex_addon.training.synth.generator import generate_sample

    t = model.template
    tris = t.triangles()
    verts = t.vertices_cm * 10.0
    out: dict[str, list] = {"frontal": [], "left": [], "right": []}
    for seed in seeds:
        for v in views(seed):
            kind = v.pop("kind")
            s = generate_sample(seed, 256, model, clean=True, return_raster=True, **v)
            pts = detect_points(det, s["image"])
            if pts is None:
                print(f"seed {seed} {kind}: no face detected, skipped")
                continue
            out[kind].append(surface_points(s, pts, tris, verts))
    return out


def aggregate(data: dict, s0: float = S0_MM):
    from pix2vertex_addon.core.landmarks import N_MP, LandmarkMap

    fr = np.stack([p for p, _, _ in data["frontal"]])  # (n, 478, 3)
    tri = np.stack([t for _, t, _ in data["frontal"]])
    bary = np.stack([b for _, _, b in data["frontal"]])
    all_pos = np.concatenate([fr] + [np.stack([p for p, _, _ in data[k]]) for k in ("left", "right")])
    hit = np.isfinite(all_pos[..., 0]).mean(axis=0)
    med = np.nanmedian(fr, axis=0)  # (478, 3)
    d = np.linalg.norm(fr - med, axis=2)
    d[np.isnan(d)] = np.inf
    best = np.argmin(d, axis=0)
    k = np.arange(N_MP)
    triangle = tri[best, k]
    b = bary[best, k]
    anchor = fr[best, k]
    spread = np.nanmedian(np.linalg.norm(fr - anchor, axis=2), axis=0)
    turned = [np.linalg.norm(np.nanmedian(np.stack([p for p, _, _ in data[kind]]), axis=0) - anchor, axis=1)
              for kind in ("left", "right")]
    slide = np.fmin(*turned)
    far_slide = np.fmax(*turned)
    ok = (hit >= MIN_HIT) & (triangle >= 0) & np.isfinite(spread) & np.isfinite(slide)
    ok[N_IRIS:] = False  # the irises follow the gaze, not the skin
    weight = np.where(ok, 1.0 / (1.0 + (np.nan_to_num(spread) ** 2 + np.nan_to_num(slide) ** 2) / s0 ** 2), 0.0)
    triangle = np.where(ok, triangle, -1)
    lmap = LandmarkMap(triangle=triangle, bary=np.where(ok[:, None], b, 0.0), weight=weight,
                       spread_mm=np.nan_to_num(spread, nan=-1.0), slide_mm=np.nan_to_num(slide, nan=-1.0))
    return lmap, np.nan_to_num(far_slide, nan=-1.0)


def report(lmap, far_slide: np.ndarray, oval: np.ndarray) -> None:
    inner = np.setdiff1d(np.arange(468), oval)
    rows = [("face oval (contour)", oval), ("inner (other 468-mesh points)", inner),
            ("irises (468-477)", np.arange(468, 478))]
    print("| points | n | mapped | spread median (mm) | slide median (mm) | slide 90 % (mm) "
          "| far-side slide median (mm) | weight median |")
    print("|---|---|---|---|---|---|---|---|")
    for name, idx in rows:
        ok = lmap.triangle[idx] >= 0
        if not ok.any():
            print(f"| {name} | {len(idx)} | 0 | - | - | - | - | 0 |")
            continue
        sp_, sl = lmap.spread_mm[idx][ok], lmap.slide_mm[idx][ok]
        print(f"| {name} | {len(idx)} | {ok.sum()} | {np.median(sp_):.2f} | {np.median(sl):.2f} | "
              f"{np.quantile(sl, 0.9):.2f} | {np.median(far_slide[idx][ok]):.2f} | {np.median(lmap.weight[idx]):.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=24, help="identities (4 views each)")
    ap.add_argument("--first-seed", type=int, default=1_000_500_000, help="first validation seed")
    ap.add_argument("--out", type=Path, default=None, help="npz path (default: the shipped map)")
    args = ap.parse_args(argv)
    from pix2vertex_addon.core.detect import FaceDetector
    from pix2vertex_addon.core.face_model import load_synth_face_model
    from pix2vertex_addon.core.landmarks import MAP_PATH
    from pix2vertex_addon.training.synth.sampling import split_of_seed

    if split_of_seed(args.first_seed) != "val" or split_of_seed(args.first_seed + args.n - 1) != "val":
        print("error: the map is derived from validation seeds only", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    model = load_synth_face_model()
    det = FaceDetector()
    data = collect(range(args.first_seed, args.first_seed + args.n), model, det)
    if len(data["frontal"]) < 3:
        print("error: too few detections to derive the map", file=sys.stderr)
        return 1
    with np.errstate(all="ignore"):
        import warnings

        warnings.simplefilter("ignore", RuntimeWarning)
        lmap, far_slide = aggregate(data)
    out = args.out or MAP_PATH
    tmp = out.with_name(out.stem + ".tmp.npz")
    lmap.save(tmp)
    tmp.replace(out)
    report(lmap, far_slide, face_oval())
    print(f"{sum(len(v) for v in data.values())} views, {time.perf_counter() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
