"""End-to-end accuracy of the fitted template on held-out synthetic faces (networks + registration).

    .venv/bin/python scripts/eval_reconstruction.py --n 100 --out OUT [--weights DIR]
        [--split test|val] [--rotations [DEG ...]] [--no-flip] [--true-maps]
    .venv/bin/python scripts/eval_reconstruction.py --compare OUT_A OUT_B

Each synthetic image is its own crop (tests/oracle.py stands in for the detector, so detection
does not enter the figures; ``--true-maps`` also for the networks); the networks predict the maps, the template is fitted to them (affine RANSAC and
non-rigid ICP, no detail step) and the registered vertices are compared with the true vertices
of the rendered face (same topology, label frame, mm). Per image, over the vertices visible in
the true render (in front, inside the true mask, not occluded):

* ``v_mean`` / ``v_median``: vertex error as reconstructed (the label frame's x, y, z, so a wrong
  distance or pose counts);
* ``shape_mean`` / ``shape_median``: after the best similarity transform (rotation, translation,
  scale) of the visible vertices, i.e. the error of the face's shape alone;
* ``all_shape_mean``: the same transform applied to every face-region vertex (the unseen side
  and the hidden parts included).

Writes ``OUT/metrics.json``, ``OUT/per_image.npz`` and ``OUT/report.md``; ``--compare`` gives paired
differences with 95 % bootstrap intervals, as ``evaluate --compare`` does for the networks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

KEYS = ("v_mean", "v_median", "shape_mean", "shape_median", "all_shape_mean", "visible_share")
LABELS = {
    "v_mean": "vertex error, mean (mm)",
    "v_median": "vertex error, median (mm)",
    "shape_mean": "shape error after similarity, mean (mm)",
    "shape_median": "shape error after similarity, median (mm)",
    "all_shape_mean": "all vertices, shape error, mean (mm)",
    "visible_share": "visible share of the template",
}


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with dst ~ s R src + t (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1.0, 1.0, d])
    rot = u @ D @ vt
    s = float((sig * np.diag(D)).sum() / (a**2).sum())
    return s, rot, md - s * rot @ ms


def visible_vertices(sample: dict, tol_mm: float = 4.0) -> np.ndarray:
    """Vertices of the rendered face that the image shows: projected with the true camera into the
    true mask, and within ``tol_mm`` of the true depth there (not hidden behind anything)."""
    v = sample["vertices_cam"].astype(np.float64)
    meta = sample["meta"]
    R = sample["image"].shape[0]
    z = v[:, 2] + meta["z_ref_mm"]
    u = meta["focal_px"] * v[:, 0] / z + R / 2
    w = meta["focal_px"] * v[:, 1] / z + R / 2
    col, row = np.floor(u).astype(int), np.floor(w).astype(int)
    inside = (col >= 0) & (col < R) & (row >= 0) & (row < R)
    vis = np.zeros(len(v), bool)
    idx = np.flatnonzero(inside)
    m = sample["mask"][row[idx], col[idx]] > 0.5
    dz = np.abs(sample["xyz"][row[idx], col[idx], 2] - v[idx, 2])
    vis[idx[m & (dz < tol_mm)]] = True
    return vis


def image_errors(rec_vertices: np.ndarray, sample: dict) -> dict:
    gt = sample["vertices_cam"].astype(np.float64)
    vis = visible_vertices(sample)
    e = np.linalg.norm(rec_vertices - gt, axis=1)[vis]
    s, rot, t = similarity_fit(rec_vertices[vis], gt[vis])
    aligned = s * rec_vertices @ rot.T + t
    ea = np.linalg.norm(aligned - gt, axis=1)
    return {
        "v_mean": float(e.mean()),
        "v_median": float(np.median(e)),
        "shape_mean": float(ea[vis].mean()),
        "shape_median": float(np.median(ea[vis])),
        "all_shape_mean": float(ea.mean()),
        "visible_share": float(vis.mean()),
    }


def run(a) -> dict:
    from pix2vertex_addon.core import detect
    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions
    from pix2vertex_addon.core.predict import DEFAULT_ROTATIONS, Predictor, default_weights_dir, load_config
    from pix2vertex_addon.training.data import SynthFaces

    from oracle import OracleDetector, OraclePredictor  # tests/oracle.py: the true maps of a sample

    rot = DEFAULT_ROTATIONS if a.rotations is None else tuple(a.rotations)
    weights = Path(a.weights) if a.weights else default_weights_dir()
    resolution = int(load_config(weights)["architecture"]["resolution"])
    pred = None if a.true_maps else Predictor(weights, threads=a.threads, flip_average=not a.no_flip, rotations=rot)
    pipe = Pipeline(predictor=pred or object(), detector=object(), threads=a.threads)
    opts = PipelineOptions(detail=False)
    ds = SynthFaces(a.split, resolution, a.n)
    per = {k: [] for k in KEYS}
    failed = 0
    t0 = time.perf_counter()
    for i in range(a.n):
        s = ds.raw(i)
        if a.true_maps:  # the registration's floor on the same images
            pipe.predictor = OraclePredictor(s)
        face = OracleDetector(s, detect).detect(s["image"])[0]  # the image is its own crop
        try:
            rec = pipe.reconstruct_face(s["image"], face, opts, lambda f, st: None, None)
        except ValueError as e:  # ReconstructionError: the networks found no face
            failed += 1
            print(f"image {i}: {e}", file=sys.stderr)
            for k in KEYS:
                per[k].append(np.nan)
            continue
        for k, v in image_errors(rec.vertices, s).items():
            per[k].append(v)
        if a.progress and (i + 1) % 10 == 0:
            print(f"{i + 1}/{a.n} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    res = {
        "n_images": a.n,
        "failed": failed,
        "split": a.split,
        "weights": "true maps (registration alone)" if pred is None else str(pred.weights_dir),
        "flip_average": pred is not None and pred.flip_average,
        "rotations": [] if pred is None else list(pred.rotations),
        "seconds_per_image": (time.perf_counter() - t0) / a.n,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **{k: float(np.nanmean(v)) for k, v in per.items()},
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(res, indent=2))
    np.savez_compressed(out / "per_image.npz", split=np.array(a.split), **{k: np.asarray(v) for k, v in per.items()})
    lines = [
        f"# Reconstruction accuracy ({a.n} held-out synthetic {a.split} images)",
        "",
        f"{res['date']}, weights `{res['weights']}`, views: mirrored {res['flip_average']}, "
        f"turned {res['rotations']}; {failed} failed; {res['seconds_per_image']:.2f} s per image.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {LABELS[k]} | {res[k]:.3f} |" for k in KEYS],
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    return res


def compare(dir_a, dir_b) -> str:
    """Paired comparison of two runs on the same images (``evaluate --compare``'s statistics)."""
    from pix2vertex_addon.training.evaluate import compare_markdown, paired_rows

    a, b = np.load(Path(dir_a) / "per_image.npz"), np.load(Path(dir_b) / "per_image.npz")
    if str(a["split"]) != str(b["split"]) or len(a["v_mean"]) != len(b["v_mean"]):
        raise ValueError(f"not the same images: {dir_a} and {dir_b}")
    rows = paired_rows(a, b, [(LABELS[k], k, True) for k in KEYS[:-1]])
    cmp = {"a": str(dir_a), "b": str(dir_b), "n_images": len(a["v_mean"]), "split": str(a["split"]), "rows": rows}
    return compare_markdown(cmp)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, metavar=("OUT_A", "OUT_B"))
    ap.add_argument("--weights", default=None, help="exported weights folder (default: the shipped ones)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--rotations", type=float, nargs="*", default=None, metavar="DEG")
    ap.add_argument("--true-maps", action="store_true", help="the true maps instead of the networks")
    ap.add_argument("--quiet", dest="progress", action="store_false")
    a = ap.parse_args(argv)
    if a.compare:
        print(compare(*a.compare))
        return 0
    if not a.out:
        ap.error("--out is required")
    res = run(a)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
