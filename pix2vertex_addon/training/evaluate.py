"""Evaluate the networks on the held-out synthetic test split (identities never seen in training).

    python -m pix2vertex_addon.training.evaluate --weights pix2vertex_addon/weights --n 500 --out OUT
    python -m pix2vertex_addon.training.evaluate --run /work/p2v_runs/NAME [--ckpt best.pt] --n 500 --out OUT

Reports (Sela et al. 2017, Table 1 protocol): per image, the absolute depth error in percent of
the ground-truth depth range after a RANSAC fit of a global scale and shift along the depth axis,
over the ground-truth mask; then mean, std, median and the mean of the largest 10 percent
("90% largest") of each image's errors, averaged over the images. Also the correspondence error
in mm (per image mean and median, averaged) and the mask IoU (prediction > 0.5). Writes
``OUT/report.md``, ``OUT/metrics.json`` and ``OUT/error_maps.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.viz import colormap, tile
from .metrics import corr_errors_mm, depth_errors, mask_iou, summarize

GOALS = {"depth_mean": 2.0, "depth_top10": 5.0, "corr_median_mm": 2.0, "mask_iou": 0.95}


def _raw_samples(data: str, resolution: int, n: int):
    """Yield numpy sample dicts of the test split."""
    from .data import FakeFaces, ShardFaces, SynthFaces, fake_sample

    if data == "synth":
        ds = SynthFaces("test", resolution, n)
        for i in range(n):
            yield ds.raw(i)
    elif data == "fake":
        for i in range(n):
            yield fake_sample(FakeFaces("test", resolution, n).base + i, resolution)
    else:
        ds = ShardFaces(data, n)
        for i in range(n):
            j = i % ds.n
            yield {k: v[j] for k, v in ds.arrays.items()}


def evaluate(
    predictor,
    data: str = "synth",
    n: int = 500,
    out_dir=None,
    n_show: int = 6,
    corr_scale_mm=None,
    batch: int = 16,
    progress: bool = True,
) -> dict:
    from tqdm import tqdm

    if corr_scale_mm is None:
        if data == "fake":
            corr_scale_mm = np.array([100.0, 100.0, 100.0])
        else:
            from ..core.correspondence import corr_to_mm_scale
            from ..core.face_model import load_face_model

            corr_scale_mm = corr_to_mm_scale(load_face_model())
    R = predictor.resolution
    per = {k: [] for k in ("d_mean", "d_std", "d_median", "d_top10", "c_mean", "c_median", "iou")}
    shows = []
    t_net = 0.0
    buf = []

    def flush():
        nonlocal t_net
        t0 = time.perf_counter()
        preds = predictor.predict_batch(np.stack([s["image"] for s in buf]))
        t_net += time.perf_counter() - t0
        for s, p in zip(buf, preds):
            m = np.asarray(s["mask"], bool)
            de = depth_errors(p["xyz"][..., 2], s["xyz"][..., 2], m)
            sd = summarize(de)
            ce = corr_errors_mm(p["corr"], s["corr"], m, corr_scale_mm)
            per["d_mean"].append(sd["mean"])
            per["d_std"].append(sd["std"])  # noqa: E702
            per["d_median"].append(sd["median"])
            per["d_top10"].append(sd["top10"])  # noqa: E702
            per["c_mean"].append(float(ce.mean()) if ce.size else np.nan)
            per["c_median"].append(float(np.median(ce)) if ce.size else np.nan)
            per["iou"].append(mask_iou(p["mask"] >= 0.5, m))
            if len(shows) < n_show:
                emap = np.zeros((R, R), np.float32)
                emap[m] = de
                cmap = np.zeros((R, R), np.float32)
                cmap[m] = ce
                shows.append((s, p, emap, cmap))
        buf.clear()

    for s in tqdm(_raw_samples(data, R, n), total=n, disable=not progress, desc="evaluate"):
        if s["image"].shape[0] != R:
            raise ValueError(f"test sample is {s['image'].shape[0]} px, the networks take {R} px")
        buf.append(s)
        if len(buf) == batch:
            flush()
    if buf:
        flush()
    res = {
        "n_images": len(per["iou"]),
        "resolution": R,
        "depth_mean": float(np.nanmean(per["d_mean"])),
        "depth_std": float(np.nanmean(per["d_std"])),
        "depth_median": float(np.nanmean(per["d_median"])),
        "depth_top10": float(np.nanmean(per["d_top10"])),
        "corr_mean_mm": float(np.nanmean(per["c_mean"])),
        "corr_median_mm": float(np.nanmean(per["c_median"])),
        "mask_iou": float(np.mean(per["iou"])),
        "net_seconds_per_image": t_net / max(1, len(per["iou"])),
        "flip_average": bool(getattr(predictor, "flip_average", False)),
        "data": data,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    res["goals_met"] = {
        "depth_mean": res["depth_mean"] <= GOALS["depth_mean"],
        "depth_top10": res["depth_top10"] <= GOALS["depth_top10"],
        "corr_median_mm": res["corr_median_mm"] <= GOALS["corr_median_mm"],
        "mask_iou": res["mask_iou"] >= GOALS["mask_iou"],
    }
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(res, indent=2))
        (out / "report.md").write_text(report_markdown(res, getattr(predictor, "config", {})))
        error_sheet(shows).save(out / "error_maps.png")
    return res


def report_markdown(res: dict, config: dict | None = None) -> str:
    ok = lambda b: "yes" if b else "no"  # noqa: E731
    g = res["goals_met"]
    lines = [
        "# Network evaluation (held-out synthetic test split)",
        "",
        f"{res['n_images']} test images at {res['resolution']} px, data `{res['data']}`, {res['date']}.",
        "",
        "Depth error: percent of the ground-truth depth range after a RANSAC fit of a global scale and shift "
        "along the depth axis, over the ground-truth mask; per-image statistics averaged over the images.",
        "",
        "| metric | value | goal | met |",
        "|---|---|---|---|",
        f"| depth mean error (%) | {res['depth_mean']:.2f} | <= 2.0 | {ok(g['depth_mean'])} |",
        f"| depth std (%) | {res['depth_std']:.2f} | | |",
        f"| depth median error (%) | {res['depth_median']:.2f} | | |",
        f"| depth 90% largest mean (%) | {res['depth_top10']:.2f} | <= 5.0 | {ok(g['depth_top10'])} |",
        f"| correspondence mean error (mm) | {res['corr_mean_mm']:.2f} | | |",
        f"| correspondence median error (mm) | {res['corr_median_mm']:.2f} | <= 2.0 | {ok(g['corr_median_mm'])} |",
        f"| mask IoU | {res['mask_iou']:.3f} | >= 0.95 | {ok(g['mask_iou'])} |",
        "",
        f"Network time {res['net_seconds_per_image'] * 1000:.0f} ms per image (both networks, batched); "
        + (
            "predictions averaged with those of the mirrored crop (the Predictor's default)."
            if res.get("flip_average")
            else "single pass, no mirrored-crop averaging (--no-flip)."
        ),
    ]
    if config:
        lines += [
            "",
            "Weights: `"
            + json.dumps(config.get("architecture", {}))
            + "`, source "
            + json.dumps({k: v for k, v in config.get("source", {}).items() if k in ("run", "checkpoint", "iter", "train_time_s")}),
        ]
    return "\n".join(lines) + "\n"


def error_sheet(shows):
    rows = []
    for s, p, emap, cmap in shows:
        m = np.asarray(s["mask"], bool)
        z = s["xyz"][..., 2]
        lo, hi = (float(z[m].min()), float(z[m].max())) if m.any() else (0.0, 1.0)
        pm = p["mask"] >= 0.5
        pz = p["xyz"][..., 2]
        mask_vis = (
            np.stack([m, pm, np.zeros_like(m)], -1).astype(np.uint8) * 255
        )  # red: true, green: predicted
        rows.append(
            [
                np.asarray(s["image"]),
                colormap(z, lo, hi, m),
                colormap(pz, lo, hi, pm),
                colormap(emap, 0, 5, m),
                colormap(cmap, 0, 5, m),
                (np.clip(p["corr"], 0, 1) * 255).astype(np.uint8),
                mask_vis,
            ]
        )
    return tile(
        rows, ["image", "true z", "pred z", "z err 0-5%", "corr err 0-5mm", "pred corr", "mask t(r)/p(g)"]
    )


class _CheckpointPredictor:
    """A Predictor built from a run folder's checkpoint via a temporary fp16 export."""

    def __new__(cls, run: str, ckpt: str, threads: int, flip_average: bool = True):
        from ..core.predict import Predictor
        from .export import export

        d = tempfile.mkdtemp(prefix="p2v_eval_")
        export(run, d, ckpt)
        return Predictor(d, threads, flip_average=flip_average)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="exported weights folder (config.json + safetensors)")
    src.add_argument("--run", help="training run folder; evaluates its checkpoint (exported to fp16 first)")
    ap.add_argument("--ckpt", default="latest.pt")
    ap.add_argument(
        "--data", default="synth", help="'synth' (test split on the fly), 'fake' or a shard folder"
    )
    ap.add_argument("--n", type=int, default=500, help="number of test images (the report needs >= 500)")
    ap.add_argument("--out", required=True, help="output folder for report.md, metrics.json, error_maps.png")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-flip", action="store_true", help="single pass: no averaging with the mirrored crop"
    )
    a = ap.parse_args(argv)
    from ..core.predict import Predictor

    flip = not a.no_flip
    pred = (
        Predictor(a.weights, a.threads, flip_average=flip)
        if a.weights
        else _CheckpointPredictor(a.run, a.ckpt, a.threads, flip)
    )
    res = evaluate(pred, a.data, a.n, a.out)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
