"""End-to-end accuracy of the fitted template on held-out synthetic faces (networks + registration).

    .venv/bin/python scripts/eval_reconstruction.py --n 100 --out OUT [--weights DIR]
        [--split test|val] [--rotations [DEG ...]] [--no-flip] [--true-maps]
    .venv/bin/python scripts/eval_reconstruction.py --compare OUT_A OUT_B

Each synthetic image is its own crop (the detector is skipped, so detection does not enter the
figures); the networks predict the maps, the template is fitted to them (affine RANSAC and
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


class _TrueMaps:
    """The rendered sample's own maps in place of the networks (``--true-maps``): the registration's
    floor on the same images."""

    flip_average, rotations, sample = False, (), None

    def __init__(self, resolution: int):
        self.resolution = resolution

    def predict(self, crop) -> dict:
        s = self.sample
        return {"xyz": s["xyz"].copy(), "mask": s["mask"].astype(np.float32), "corr": s["corr"].copy()}


def run(a) -> dict:
    from pix2vertex_addon.core.detect import DetectedFace
    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions
    from pix2vertex_addon.core.predict import DEFAULT_ROTATIONS, Predictor
    from pix2vertex_addon.training.data import SynthFaces

    rot = DEFAULT_ROTATIONS if a.rotations is None else tuple(a.rotations)
    pred = (
        _TrueMaps(Predictor(a.weights, threads=1, flip_average=False, rotations=()).resolution)
        if a.true_maps
        else Predictor(a.weights, threads=a.threads, flip_average=not a.no_flip, rotations=rot)
    )
    pipe = Pipeline(predictor=pred, detector=object(), threads=a.threads)
    opts = PipelineOptions(detail=False)
    ds = SynthFaces(a.split, pred.resolution, a.n)
    per = {k: [] for k in KEYS}
    failed = 0
    t0 = time.perf_counter()
    for i in range(a.n):
        s = ds.raw(i)
        if a.true_maps:
            pred.sample = s
        R = s["image"].shape[0]
        lm = np.asarray(s["landmarks_2d"], np.float64)
        face = DetectedFace(box=np.r_[lm.min(0), lm.max(0)], score=1.0, landmarks_478=lm, landmarks_68=lm,
                            crop=(0.0, 0.0, float(R)))
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
        "weights": "true maps (registration alone)" if a.true_maps else str(pred.weights_dir),
        "flip_average": pred.flip_average,
        "rotations": list(pred.rotations),
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


def compare(dir_a, dir_b, n_boot: int = 2000) -> str:
    a, b = np.load(Path(dir_a) / "per_image.npz"), np.load(Path(dir_b) / "per_image.npz")
    if str(a["split"]) != str(b["split"]) or len(a["v_mean"]) != len(b["v_mean"]):
        raise ValueError(f"not the same images: {dir_a} and {dir_b}")
    n = len(a["v_mean"])
    idx = np.random.default_rng(0).integers(0, n, (n_boot, n))
    lines = [
        f"# Paired comparison of reconstructions on {n} {a['split']} images",
        "",
        f"A: `{dir_a}`  ",
        f"B: `{dir_b}`",
        "",
        "| metric | A | B | B - A | 95 % CI | images where B is better |",
        "|---|---|---|---|---|---|",
    ]
    for k in KEYS[:-1]:
        ok = np.isfinite(a[k]) & np.isfinite(b[k])
        d = np.where(ok, b[k] - a[k], 0.0)
        boot = d[idx].sum(1) / np.maximum(ok[idx].sum(1), 1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        sig = "" if lo > 0 or hi < 0 else " (n.s.)"
        lines.append(
            f"| {LABELS[k]} | {a[k][ok].mean():.3f} | {b[k][ok].mean():.3f} | {d[ok].mean():+.3f} | "
            f"[{lo:+.3f}, {hi:+.3f}]{sig} | {(d[ok] < 0).mean() * 100:.0f} % |"
        )
    return "\n".join(lines) + "\n"


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
