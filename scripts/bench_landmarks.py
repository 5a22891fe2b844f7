"""Dense-only against landmark-guided fit, side by side in one run (real detector and networks).

    .venv/bin/python scripts/bench_landmarks.py --set val --n 24 [--params '{"w_landmark": 3}']
    .venv/bin/python scripts/bench_landmarks.py --set cycles --data DIR

``--set val``: renders of the project's generator on validation seeds (for choosing weights);
``--set cycles``: the Cycles test set of ``scripts/render_cycles_testset.py`` (only ever for
reporting: ``--params`` is refused there). Each 256-px image is padded by 128 px of replicated
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
  similarity transform (the crop's camera frame is not the scene's).

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
MODES = ("dense", "guided")
KEYS = ("nme68", "nme_inner", "nme_jaw", "depth_mean", "depth_median", "depth_q90", "vertex_mm")
LABELS = {"nme68": "NME68 (% IOD)", "nme_inner": "NME inner 51 (%)", "nme_jaw": "NME jaw 17 (%)",
          "depth_mean": "depth error mean (% range)", "depth_median": "depth error median (% range)",
          "depth_q90": "depth error 90 %-largest (% range)", "vertex_mm": "vertex error after similarity (mm)"}


class _OncePredictor:
    """The networks' maps of the last crop, reused by the second fit of the same image."""

    def __init__(self, predictor):
        self.p = predictor
        self.resolution = predictor.resolution
        self._key: bytes | None = None
        self._maps: dict | None = None

    def predict(self, crop):
        key = crop.tobytes()
        if key != self._key or self._maps is None:
            self._maps, self._key = self.p.predict(crop), key
        return {k: v.copy() for k, v in self._maps.items()}


def samples(a):
    """(name, sample) pairs: image, xyz, mask, vertices_cam, meta{focal_px, z_ref_mm}."""
    if a.set == "val":
        from pix2vertex_addon.core.face_model import load_synth_face_model
        from pix2vertex_addon.training.synth.generator import generate_sample

        model = load_synth_face_model()
        for i in range(a.n):
            seed = FIRST_VAL_SEED + a.offset + i
            yield f"val{seed}", generate_sample(seed, 256, model, occluders=False)
    else:
        files = sorted(Path(a.data).glob("*.npz"))[: a.n or None]
        if not files:
            raise SystemExit(f"error: no .npz files in {a.data}")
        for f in files:
            with np.load(f, allow_pickle=False) as z:
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


def evaluate(rec, s, gt68, template) -> dict:
    from eval_reconstruction import image_errors

    from pix2vertex_addon.core.landmarks import photo_landmarks_68
    from pix2vertex_addon.core.projection import crop_depth, depth_map
    from pix2vertex_addon.training.metrics import depth_errors

    r = s["image"].shape[0]
    lm = photo_landmarks_68(rec.camera, rec.vertices, template)
    n68, ni, nj = nme(lm, gt68)
    tris = template.triangles()
    d = depth_map(rec.camera, crop_depth(rec.camera, rec.vertices, tris), (r + 2 * PAD, r + 2 * PAD))
    pred_z = d[PAD:PAD + r, PAD:PAD + r]
    true_z = s["xyz"][..., 2].astype(np.float64) + s["meta"]["z_ref_mm"]
    m = s["mask"].astype(bool) & np.isfinite(pred_z)
    de = depth_errors(np.nan_to_num(pred_z), true_z, m)
    ve = image_errors(rec.vertices, s)["shape_mean"]
    return dict(nme68=n68, nme_inner=ni, nme_jaw=nj, depth_mean=float(de.mean()), depth_median=float(np.median(de)),
                depth_q90=float(np.quantile(de, 0.9)), vertex_mm=float(ve),
                coverage=float(m.sum() / max(1, s["mask"].sum())))


def run(a) -> dict:
    from pix2vertex_addon.core.geometry import LANDMARK_PARAMS, RegistrationParams
    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions
    from pix2vertex_addon.core.predict import get_predictor

    pipe = Pipeline(threads=a.threads)
    pipe.predictor = _OncePredictor(get_predictor(None, a.threads))
    template = pipe.model.template
    guided = LANDMARK_PARAMS
    if a.params:
        import dataclasses

        guided = dataclasses.replace(LANDMARK_PARAMS, **json.loads(a.params))
    params = {"dense": RegistrationParams(), "guided": guided}
    per: dict[str, dict[str, list]] = {m: {k: [] for k in (*KEYS, "coverage", "seconds")} for m in MODES}
    det68, names, failed = [], [], []
    t0 = time.perf_counter()
    for name, s in samples(a):
        photo = np.pad(s["image"], ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")
        gt68 = truth_68(s, template)
        try:
            face = pipe.detector.detect(photo)[0]
        except ValueError as exc:
            failed.append(f"{name}: {exc}")
            continue
        recs = {}
        try:
            for mode in MODES:
                opts = PipelineOptions(detail=False, landmarks=mode == "guided", registration=params[mode])
                rec = pipe.reconstruct_face(photo, face, opts, lambda f, st: None, None)
                recs[mode] = (rec, sum(rec.seconds[k] for k in ("target_mesh", "affine", "registration")))
        except ValueError as exc:
            failed.append(f"{name}: {exc}")
            continue
        names.append(name)
        det68.append(nme(face.landmarks_68, gt68))
        for mode, (rec, sec) in recs.items():
            for k, v in evaluate(rec, s, gt68, template).items():
                per[mode][k].append(v)
            per[mode]["seconds"].append(sec)
        if a.progress:
            g, d_ = per["guided"]["nme68"][-1], per["dense"]["nme68"][-1]
            print(f"{name}: NME68 dense {d_:.2f} guided {g:.2f} detector {det68[-1][0]:.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    res = {"set": a.set, "n": len(names), "failed": failed, "params": guided.__dict__ if a.params else "LANDMARK_PARAMS",
           "date": time.strftime("%Y-%m-%d %H:%M"),
           "detector_nme": np.mean(det68, axis=0).tolist() if det68 else None,
           **{m: {k: float(np.mean(v)) if v else float("nan") for k, v in per[m].items()} for m in MODES}}
    if names:
        g, d = np.array(per["guided"]["nme68"]), np.array(per["dense"]["nme68"])
        res["guided_better_share"] = float((g < d).mean())
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "per_image.npz", names=np.array(names), detector=np.array(det68),
                            **{f"{m}_{k}": np.array(v) for m in MODES for k, v in per[m].items()})
        (out / "metrics.json").write_text(json.dumps(res, indent=2))
    return res


def table(res: dict) -> str:
    lines = [f"| {res['set']} set, {res['n']} images | dense-only | landmark-guided |", "|---|---|---|"]
    for k in KEYS:
        lines.append(f"| {LABELS[k]} | {res['dense'][k]:.2f} | {res['guided'][k]:.2f} |")
    lines.append(f"| fitted-depth coverage of the true mask | {res['dense']['coverage']:.3f} | "
                 f"{res['guided']['coverage']:.3f} |")
    lines.append(f"| seconds per fit (target mesh, affine, registration) | {res['dense']['seconds']:.2f} | "
                 f"{res['guided']['seconds']:.2f} |")
    if "guided_better_share" in res:
        lines.append(f"| images where guided NME68 < dense | | {100 * res['guided_better_share']:.0f} % |")
    if res["detector_nme"]:
        n68, ni, nj = res["detector_nme"]
        lines.append(f"| MediaPipe's own 478 -> 68 points: NME68 / inner / jaw | {n68:.2f} / {ni:.2f} / {nj:.2f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=["val", "cycles"], default="val")
    ap.add_argument("--data", help="folder of the Cycles test set (.npz)")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--offset", type=int, default=0, help="first validation seed offset")
    ap.add_argument("--params", help="JSON overrides of LANDMARK_PARAMS (validation set only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--quiet", dest="progress", action="store_false")
    a = ap.parse_args(argv)
    if a.set == "cycles" and (a.params or not a.data):
        ap.error("the Cycles test set needs --data and never takes --params (weights are chosen on --set val)")
    res = run(a)
    print(table(res))
    if res["failed"]:
        print("failed: " + "; ".join(res["failed"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
