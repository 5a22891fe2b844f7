"""Dense-only against landmark-guided fit, side by side in one run (real detector and networks).

    .venv/bin/python scripts/bench_landmarks.py --set val --n 24 [--params '{"w_landmark": 3}']
    .venv/bin/python scripts/bench_landmarks.py --set cycles-val --data DIR --params '[{...}, {...}]'
    .venv/bin/python scripts/bench_landmarks.py --set cycles --data DIR [--modes dense,guided,depth]

``--set val``: renders of the project's generator on validation seeds (for choosing weights);
``--set cycles-val``: Cycles renders of validation identities (``render_cycles_testset.py
--split val``; for choosing weights on photo-like images); ``--set cycles``: the Cycles test set
of ``scripts/render_cycles_testset.py`` (only ever for reporting: ``--params`` is refused there,
and the files' seeds must be test seeds). Columns (``--modes``): ``dense`` (the paper's fit),
``guided`` (``LANDMARK_PARAMS``), ``depth`` (``LANDMARK_DEPTH_PARAMS``: guided plus the
detector's depth); on the validation sets ``--params`` (a JSON object or a list of them:
overrides of ``LANDMARK_PARAMS``) replaces ``guided`` by one column per object, beside the
dense-only fit of the same maps. ``--cache DIR`` keeps each image's detection and network maps
(delete it when the networks or the detector change), so a second run only fits; ``--repeat N``
fits every image N times, the columns interleaved, and reports each fit's fastest time. Each 256-px image is padded by 128 px of replicated
border (the detector needs context), then MediaPipe and the networks run once and the template
is fitted both ways (no detail step). Per image, against the scene's truth:

* NME68: mean distance of the fitted template's 68 landmarks (jaw on its occluding contour,
  ``landmarks.photo_landmarks_68``) to the true ones (the same definition on the true mesh), in %
  of the inter-ocular distance (outer eye corners); also inner 51 and jaw 17, and the detector's
  own 478 -> 68 points;
* depth error, the paper's metric (``training.metrics.depth_errors``: RANSAC scale and shift,
  % of the true depth range) of the fitted template's depth over the true face pixels it covers:
  mean, median and 90 %-largest per image;
* vertex error: mean distance (mm) to the true vertices visible in the image after the best
  similarity transform (the crop's camera frame is not the scene's);
* the jaw line: on the ray from the true inner points' centroid through each true jaw point
  (on the true mesh's outline), the signed offset (positive: past the true jaw line) and its
  absolute value, % IOD, of the fitted template's jaw points, MediaPipe's and the networks'
  geometry's outline (:func:`jaw_outlines`). The networks' mask is not among them: it holds
  the neck and the ears, so it has no jaw line.

Prints a markdown table (mean over images) and writes ``--out``/per_image.npz when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAD = 128
FIRST_VAL_SEED = 1_000_600_000  # not the landmark map's seeds
KEYS = ("nme68", "nme_inner", "nme_jaw", "nme_jaw_outline", "nme_jaw_visible", "nme_jaw_visible_outline",
        "truth_jaw_moved", "depth_mean", "depth_median", "depth_q90", "vertex_mm",
        "outline_signed", "outline_abs")
LABELS = {"nme68": "NME68 (% IOD)", "nme_inner": "NME inner 51 (%)", "nme_jaw": "NME jaw 17 (%)",
          "nme_jaw_outline": "... jaw 17 without the mask rule (the fitted outline alone)",
          "nme_jaw_visible": "NME jaw 17 against the visible truth (%)",
          "nme_jaw_visible_outline": "... without the mask rule",
          "truth_jaw_moved": "visible truth: true jaw points moved by (% IOD)",
          "depth_mean": "depth error mean (% range)", "depth_median": "depth error median (% range)",
          "depth_q90": "depth error 90 %-largest (% range)", "vertex_mm": "vertex error after similarity (mm)",
          "outline_signed": "jaw line, signed (% IOD, + past the true one)",
          "outline_abs": "jaw line, absolute (% IOD)"}
SET_SPLIT = {"cycles": "test", "cycles-val": "val"}


class _FixedPredictor:
    """Returns the maps it was given (one image's networks' output, reused by every fit)."""

    def __init__(self, resolution: int):
        self.resolution = resolution
        self.maps: dict = {}

    def predict(self, crop):
        return {k: v.copy() for k, v in self.maps.items()}


FACE_KEYS = ("box", "landmarks_478", "landmarks_68", "crop", "depth_478")


def detect_and_predict(pipe, predictor, photo: np.ndarray, cache: Path | None):
    """(DetectedFace, maps) of a padded image, from ``cache`` when there."""
    from pix2vertex_addon.core.crop import square_window
    from pix2vertex_addon.core.detect import DetectedFace

    if cache is not None and cache.exists():
        with np.load(cache) as z:
            face = DetectedFace(score=1.0, **{k: z[k] for k in FACE_KEYS if k != "crop"},
                                crop=tuple(float(c) for c in z["crop"]))
            return face, {k: z[k] for k in ("xyz", "mask", "corr")}
    face = pipe.detector.detect(photo)[0]
    x0, y0, side = face.crop
    crop, _, _, _ = square_window(photo, x0 + side / 2, y0 + side / 2, side, predictor.resolution)
    maps = predictor.predict(crop)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.asarray(getattr(face, k), dtype=np.float64) for k in FACE_KEYS}, **maps)
        tmp.replace(cache)
    return face, maps


def samples(a):
    """(name, sample) pairs: image, xyz, mask, vertices_cam, meta{focal_px, z_ref_mm}."""
    if a.set == "val":
        from pix2vertex_addon.core.face_model import load_synth_face_model
        from pix2vertex_addon.training.synth.generator import generate_sample

        model = load_synth_face_model()
        for i in range(a.n):
            seed = FIRST_VAL_SEED + a.offset + i
            yield f"val{seed}", generate_sample(seed, 256, model, occluders=a.occluders)
    else:
        from pix2vertex_addon.training.synth.sampling import split_of_seed

        files = sorted(Path(a.data).glob("*.npz"))[: a.n or None]
        if not files:
            raise SystemExit(f"error: no .npz files in {a.data}")
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                if split_of_seed(int(z["seed"])) != SET_SPLIT[a.set]:
                    raise SystemExit(f"error: {f.name} is a {split_of_seed(int(z['seed']))} seed, "
                                     f"--set {a.set} takes {SET_SPLIT[a.set]} seeds only")
                yield f.stem, {"image": z["image"], "xyz": z["xyz"], "mask": z["mask"],
                               "vertices_cam": z["vertices_cam"],
                               "meta": {"focal_px": float(z["focal_px"]), "z_ref_mm": float(z["z_ref_mm"])}}


def truth_68(s, template) -> np.ndarray:
    from pix2vertex_addon.core.landmarks import fitted_landmarks_68

    r = s["image"].shape[0]
    return fitted_landmarks_68(s["vertices_cam"].astype(np.float64), template.triangles(), template.landmarks_68,
                               s["meta"]["focal_px"],
                               s["meta"]["z_ref_mm"], r) + PAD


def nme(pred, gt) -> tuple[float, float, float]:
    iod = float(np.linalg.norm(gt[36] - gt[45]))
    e = np.linalg.norm(pred - gt, axis=1) / iod * 100
    return float(e.mean()), float(e[17:].mean()), float(e[:17].mean())


def radial_offsets(points: np.ndarray, gt68: np.ndarray) -> np.ndarray:
    """(17,) signed distance (% IOD) of jaw points from the true ones along the ray from the
    true inner points' centroid through each true jaw point: positive past the true jaw line."""
    c = gt68[17:].mean(axis=0)
    d = gt68[:17] - c
    length = np.linalg.norm(d, axis=1)
    along = np.einsum("ij,ij->i", points - c, d / length[:, None])
    return (along - length) / float(np.linalg.norm(gt68[36] - gt68[45])) * 100


def jaw_outlines(rec, face, lm68, gt68) -> dict[str, np.ndarray]:
    """(17,) per source, the signed radial offset (:func:`radial_offsets`) of its jaw line: the
    fitted template's jaw points ``lm68[:17]`` (on its outline), MediaPipe's own 68 (its face
    oval), and the networks' geometry: where the target mesh's outline crosses each ray
    (:func:`landmarks.outline_scan` over 0.6-1.15 times the true point's distance, the fit's
    jaw rule; NaN where the target goes on past that, as onto the neck)."""
    from pix2vertex_addon.core.landmarks import JAW_SCAN, outline_depth, outline_scan

    cam = rec.camera
    up = 2
    depth, covered = outline_depth(rec.target.vertices, rec.target.faces, cam.focal, cam.z_ref, cam.resolution, up,
                                   cull_backfaces=False)
    c = gt68[17:].mean(axis=0)
    to_px = lambda p: (p - np.asarray(cam.box[:2])) / cam.image_scale * up  # noqa: E731
    net = np.full((17, 2), np.nan)
    for j in range(17):
        t = outline_scan(depth, covered, to_px(c), to_px(gt68[j]), JAW_SCAN)
        if t is not None:
            net[j] = c + t * (gt68[j] - c)
    return {"fitted": radial_offsets(lm68[:17], gt68), "detector": radial_offsets(face.landmarks_68[:17], gt68),
            "network": radial_offsets(net, gt68)}


def _nanmean(v) -> float:
    v = np.asarray(v, dtype=np.float64)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")


def evaluate(rec, s, gt68, template, face) -> dict:
    from eval_reconstruction import image_errors

    from pix2vertex_addon.core.landmarks import photo_landmarks_68, visible_jaw
    from pix2vertex_addon.core.projection import crop_depth, depth_map
    from pix2vertex_addon.training.metrics import depth_errors

    r = s["image"].shape[0]
    lm = photo_landmarks_68(rec.camera, rec.vertices, template, mask=rec.maps["mask"])  # as landmarks.json
    n68, ni, nj = nme(lm, gt68)
    # the jaw without the mask rule (the fitted outline alone), and both against the visible
    # truth: the true jaw points moved onto the true mask by the same rule (hair, ears)
    lm_outline = photo_landmarks_68(rec.camera, rec.vertices, template)
    vis68 = gt68.copy()
    vis68[:17] = visible_jaw(gt68[:17] - PAD, gt68[17:].mean(axis=0) - PAD, s["mask"].astype(np.float32), r) + PAD
    jaw_rows = {"nme_jaw_outline": nme(lm_outline, gt68)[2], "nme_jaw_visible": nme(lm, vis68)[2],
                "nme_jaw_visible_outline": nme(lm_outline, vis68)[2],
                "truth_jaw_moved": float(np.linalg.norm(vis68[:17] - gt68[:17], axis=1).mean()
                                         / np.linalg.norm(gt68[36] - gt68[45]) * 100)}
    tris = template.triangles()
    d = depth_map(rec.camera, crop_depth(rec.camera, rec.vertices, tris), (r + 2 * PAD, r + 2 * PAD))
    pred_z = d[PAD:PAD + r, PAD:PAD + r]
    true_z = s["xyz"][..., 2].astype(np.float64) + s["meta"]["z_ref_mm"]
    m = s["mask"].astype(bool) & np.isfinite(pred_z)
    de = depth_errors(np.nan_to_num(pred_z), true_z, m)
    ve = image_errors(rec.vertices, s)["shape_mean"]
    outl = jaw_outlines(rec, face, lm, gt68)
    return dict(nme68=n68, nme_inner=ni, nme_jaw=nj, **jaw_rows, depth_mean=float(de.mean()), depth_median=float(np.median(de)),
                depth_q90=float(np.quantile(de, 0.9)), vertex_mm=float(ve),
                coverage=float(m.sum() / max(1, s["mask"].sum())),
                outline_signed=_nanmean(outl["fitted"]), outline_abs=_nanmean(np.abs(outl["fitted"])),
                **{f"outline_{k}_{q}": _nanmean(v if q == "signed" else np.abs(v))
                   for k, v in outl.items() if k != "fitted" for q in ("signed", "abs")},
                **{f"outline_{k}_found": float(np.isfinite(v).mean()) for k, v in outl.items()})


def columns(a) -> list[tuple[str, bool, object]]:
    """(label, landmarks on, RegistrationParams) per column."""
    import dataclasses

    from pix2vertex_addon.core.geometry import LANDMARK_DEPTH_PARAMS, LANDMARK_PARAMS, RegistrationParams

    fixed = {"dense": (False, RegistrationParams()), "guided": (True, LANDMARK_PARAMS),
             "depth": (True, LANDMARK_DEPTH_PARAMS)}
    if not a.params:
        return [(m, *fixed[m]) for m in a.modes.split(",")]
    overrides = json.loads(a.params)
    overrides = overrides if isinstance(overrides, list) else [overrides]
    return [("dense", *fixed["dense"])] + [(json.dumps(o), True, dataclasses.replace(LANDMARK_PARAMS, **o))
                                          for o in overrides]


def run(a) -> dict:
    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions

    pipe = Pipeline(threads=a.threads)
    cache = Path(a.cache) if a.cache else None
    predictor = pipe.predictor
    pipe.predictor = fixed = _FixedPredictor(pipe.resolution)
    template = pipe.model.template
    cols = columns(a)
    modes = [c[0] for c in cols]
    per: dict[str, dict[str, list]] = {m: {} for m in modes}
    det68, names, failed = [], [], []
    t0 = time.perf_counter()
    for name, s in samples(a):
        photo = np.pad(s["image"], ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")
        gt68 = truth_68(s, template)
        path = cache / f"{name}.npz" if cache else None
        try:
            face, maps = detect_and_predict(pipe, predictor, photo, path)
        except ValueError as exc:
            failed.append(f"{name}: {exc}")
            continue
        fixed.maps = maps
        recs = {}
        try:
            for _ in range(a.repeat):  # the columns interleaved, each fit's fastest of the repeats
                for mode, guided, params in cols:
                    opts = PipelineOptions(detail=False, landmarks=guided, registration=params)
                    rec = pipe.reconstruct_face(photo, face, opts, lambda f, st: None, None)
                    sec = sum(rec.seconds[k] for k in ("target_mesh", "affine", "registration"))
                    recs[mode] = (rec, min(sec, recs[mode][1]) if mode in recs else sec)
        except ValueError as exc:
            failed.append(f"{name}: {exc}")
            continue
        names.append(name)
        det68.append(nme(face.landmarks_68, gt68))
        for mode, (rec, sec) in recs.items():
            for k, v in evaluate(rec, s, gt68, template, face).items():
                per[mode].setdefault(k, []).append(v)
            per[mode].setdefault("seconds", []).append(sec)
        if a.progress:
            print(f"{name}: NME68 " + " ".join(f"{per[m]['nme68'][-1]:.2f}" for m in modes)
                  + f" detector {det68[-1][0]:.2f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    res = {"set": a.set, "n": len(names), "failed": failed, "modes": modes, "date": time.strftime("%Y-%m-%d %H:%M"),
           "detector_nme": np.mean(det68, axis=0).tolist() if det68 else None,
           **{m: {k: _nanmean(v) for k, v in per[m].items()} for m in modes}}
    if names:
        d = np.array(per["dense"]["nme68"]) if "dense" in per else None
        for m in modes:
            if d is not None and m != "dense":
                res[m]["better_share"] = float((np.array(per[m]["nme68"]) < d).mean())
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "per_image.npz", names=np.array(names), detector=np.array(det68),
                            **{f"{i}_{k}": np.array(v) for i, m in enumerate(modes) for k, v in per[m].items()})
        (out / "metrics.json").write_text(json.dumps(res, indent=2))
    return res


def table(res: dict) -> str:
    modes = res["modes"]
    names = {"dense": "dense-only", "guided": "landmark-guided", "depth": "guided + depth"}
    lines = [f"| {res['set']} set, {res['n']} images | " + " | ".join(names.get(m, m) for m in modes) + " |",
             "|---" * (len(modes) + 1) + "|"]

    def row(label, key, fmt):
        return f"| {label} | " + " | ".join(fmt.format(res[m][key]) if key in res[m] else "" for m in modes) + " |"

    for k in KEYS:
        lines.append(row(LABELS[k], k, "{:.2f}"))
    lines.append(row("fitted-depth coverage of the true mask", "coverage", "{:.3f}"))
    lines.append(row("seconds per fit (target mesh, affine, registration)", "seconds", "{:.3f}"))
    if "dense" in modes and res["n"]:
        lines.append("| ... against dense-only | " + " | ".join(
            "" if m == "dense" else f"{res[m]['seconds'] - res['dense']['seconds']:+.3f} s "
            f"({res[m]['seconds'] / res['dense']['seconds']:.2f}x)" for m in modes) + " |")
    if res["n"]:
        lines.append(f"| images where NME68 < dense-only ({res['n']}) | " + " | ".join(
            f"{100 * res[m]['better_share']:.0f} % ({round(res[m]['better_share'] * res['n'])})"
            if "better_share" in res[m] else "" for m in modes) + " |")
    if res["detector_nme"]:
        n68, ni, nj = res["detector_nme"]
        lines.append(f"| MediaPipe's own 478 -> 68 points: NME68 / inner / jaw | {n68:.2f} / {ni:.2f} / {nj:.2f} |"
                     + " |" * (len(modes) - 1))
    m0 = modes[0]
    if "outline_network_signed" in res[m0]:
        lines.append("")
        lines.append("| jaw line against the true one (% IOD) | signed (+ past) | absolute | rays crossed |")
        lines.append("|---|---|---|---|")
        for label, key in (("networks' geometry (target mesh)", "network"), ("MediaPipe's own jaw points", "detector")):
            lines.append(f"| {label} | {res[m0][f'outline_{key}_signed']:+.2f} | {res[m0][f'outline_{key}_abs']:.2f} | "
                         f"{100 * res[m0][f'outline_{key}_found']:.0f} % |")
        for m in modes:
            lines.append(f"| fitted template, {names.get(m, m)} | {res[m]['outline_signed']:+.2f} | "
                         f"{res[m]['outline_abs']:.2f} | {100 * res[m]['outline_fitted_found']:.0f} % |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=["val", "cycles-val", "cycles"], default="val")
    ap.add_argument("--data", help="folder of the Cycles renders (.npz)")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--offset", type=int, default=0, help="first validation seed offset")
    ap.add_argument("--occluders", action="store_true",
                    help="--set val: with the generator's hair and occluders (out of the true mask)")
    ap.add_argument("--modes", default="dense,guided", help="columns: dense, guided, depth (comma-separated)")
    ap.add_argument("--params", help="JSON overrides of LANDMARK_PARAMS, or a list of them (validation sets only)")
    ap.add_argument("--cache", help="folder for each image's detection and network maps")
    ap.add_argument("--repeat", type=int, default=1, help="fit each image this often (seconds: the fastest)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--quiet", dest="progress", action="store_false")
    a = ap.parse_args(argv)
    if a.set != "val" and not a.data:
        ap.error(f"--set {a.set} needs --data")
    if a.set == "cycles" and a.params:
        ap.error("the Cycles test set never takes --params (weights are chosen on the validation sets)")
    res = run(a)
    print(table(res))
    if res["failed"]:
        print("failed: " + "; ".join(res["failed"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
