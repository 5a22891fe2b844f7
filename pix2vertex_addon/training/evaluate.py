"""Evaluate the networks on the held-out synthetic test split (identities never seen in training).

    python -m pix2vertex_addon.training.evaluate --weights pix2vertex_addon/weights --n 500 --out OUT
    python -m pix2vertex_addon.training.evaluate --run /work/p2v_runs/NAME [--ckpt best.pt] --n 500 --out OUT

    python -m pix2vertex_addon.training.evaluate --compare OUT_A OUT_B [--out DIR]  # paired, with CIs

``--split val`` evaluates on the validation split instead: use it to choose anything (weights,
inference settings), and the test split only to report. ``--rotations`` / ``--scales`` /
``--no-flip`` set the Predictor's views (default: its own).

Reports (Sela et al. 2017, Table 1 protocol): per image, the absolute depth error in percent of
the ground-truth depth range after a RANSAC fit of a global scale and shift along the depth axis,
over the ground-truth mask; then mean, std, median and the mean of the largest 10 percent
("90% largest") of each image's errors, averaged over the images. Also the correspondence error
in mm (per image mean and median, averaged) and the mask IoU (prediction > 0.5).

Depth and correspondence are the networks' outputs scored over the ground-truth mask, as the
training validation does; the mask is scored by its IoU and by its coverage (the share of
ground-truth mask pixels it keeps). The maps as the Predictor hands them on are zero where the
predicted mask is off; their errors (each dropped pixel counted at depth 0, correspondence 0) are
reported as well, in ``masked_output``.

Writes ``OUT/report.md``, ``OUT/metrics.json``, ``OUT/per_image.npz`` (every per-image statistic,
in test-split order) and ``OUT/error_maps.png``. ``--compare`` reads two such folders (same test
images) and reports the paired differences with 95 % bootstrap confidence intervals.
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
PER_IMAGE_FILE = "per_image.npz"
PER_IMAGE_KEYS = tuple(
    f"{tag}{k}"
    for tag in ("", "masked_")
    for k in ("d_mean", "d_std", "d_median", "d_top10", "c_mean", "c_median")
) + ("iou", "coverage")


def _raw_samples(data: str, resolution: int, n: int, split: str = "test"):
    """Yield numpy sample dicts of the test split (or the validation split, for choosing things
    without looking at the test split)."""
    from .data import FakeFaces, ShardFaces, SynthFaces, fake_sample

    if data == "synth":
        ds = SynthFaces(split, resolution, n)
        for i in range(n):
            yield ds.raw(i)
    elif data == "fake":
        for i in range(n):
            yield fake_sample(FakeFaces(split, resolution, n).base + i, resolution)
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
    split: str = "test",
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
    per = {k: [] for k in PER_IMAGE_KEYS}
    shows = []
    t_net = 0.0
    buf = []

    def flush():
        nonlocal t_net
        t0 = time.perf_counter()
        preds = predictor.predict_batch(np.stack([s["image"] for s in buf]), apply_mask=False)
        t_net += time.perf_counter() - t0
        for s, p in zip(buf, preds):
            m = np.asarray(s["mask"], bool)
            pm = p["mask"] >= 0.5
            # the networks' depth and correspondence over the true mask (as the training validation)
            de = depth_errors(p["xyz"][..., 2], s["xyz"][..., 2], m)
            ce = corr_errors_mm(p["corr"], s["corr"], m, corr_scale_mm)
            # the maps as the Predictor hands them on: zero where the predicted mask is off
            de_m = depth_errors(p["xyz"][..., 2] * pm, s["xyz"][..., 2], m)
            ce_m = corr_errors_mm(p["corr"] * pm[..., None], s["corr"], m, corr_scale_mm)
            for tag, d, c in (("", de, ce), ("masked_", de_m, ce_m)):
                sd = summarize(d)
                for k in ("mean", "std", "median", "top10"):
                    per[f"{tag}d_{k}"].append(sd[k])
                per[f"{tag}c_mean"].append(float(c.mean()) if c.size else np.nan)
                per[f"{tag}c_median"].append(float(np.median(c)) if c.size else np.nan)
            per["iou"].append(mask_iou(pm, m))
            per["coverage"].append(float((m & pm).sum() / m.sum()) if m.any() else 1.0)
            if len(shows) < n_show:
                emap = np.zeros((R, R), np.float32)
                emap[m] = de
                cmap = np.zeros((R, R), np.float32)
                cmap[m] = ce
                shows.append((s, p, emap, cmap))
        buf.clear()

    for s in tqdm(_raw_samples(data, R, n, split), total=n, disable=not progress, desc="evaluate"):
        if s["image"].shape[0] != R:
            raise ValueError(f"{split} sample is {s['image'].shape[0]} px, the networks take {R} px")
        buf.append(s)
        if len(buf) == batch:
            flush()
    if buf:
        flush()
    avg = {k: float(np.nanmean(v)) for k, v in per.items()}
    res = {
        "n_images": len(per["iou"]),
        "resolution": R,
        "depth_mean": avg["d_mean"],
        "depth_std": avg["d_std"],
        "depth_median": avg["d_median"],
        "depth_top10": avg["d_top10"],
        "corr_mean_mm": avg["c_mean"],
        "corr_median_mm": avg["c_median"],
        "mask_iou": avg["iou"],
        "mask_coverage": avg["coverage"],
        "masked_output": {
            "depth_mean": avg["masked_d_mean"],
            "depth_top10": avg["masked_d_top10"],
            "corr_mean_mm": avg["masked_c_mean"],
            "corr_median_mm": avg["masked_c_median"],
        },
        "net_seconds_per_image": t_net / max(1, len(per["iou"])),
        "flip_average": bool(getattr(predictor, "flip_average", False)),
        "rotations": [float(a) for a in getattr(predictor, "rotations", ())],
        "scales": [float(x) for x in getattr(predictor, "scales", ())],
        "data": data,
        "split": split,
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
        np.savez_compressed(
            out / PER_IMAGE_FILE, data=np.array(data), split=np.array(split), **{k: np.asarray(v, np.float64) for k, v in per.items()}
        )
        (out / "report.md").write_text(report_markdown(res, getattr(predictor, "config", {})))
        if shows:  # (n_show=0: no heat maps)
            error_sheet(shows).save(out / "error_maps.png")
    return res


def views_text(res: dict) -> str:
    rot = [a for a in res.get("rotations", []) if a]
    sca = [x for x in res.get("scales", []) if x != 1.0]
    flip = res.get("flip_average")
    if not rot and not sca:
        return (
            "predictions averaged with those of the mirrored crop."
            if flip
            else "single pass, no mirrored-crop averaging (--no-flip)."
        )
    kinds = []
    if rot:
        kinds.append("turned by " + ", ".join(f"{a:+g}" for a in rot) + " degrees")
    if sca:
        kinds.append("zoomed by " + ", ".join(f"{x:g}" for x in sca))
    return (
        f"predictions averaged over the crop and its views {' and '.join(kinds)}"
        + (", each also mirrored." if flip else " (no mirroring).")
    )


def report_markdown(res: dict, config: dict | None = None) -> str:
    ok = lambda b: "yes" if b else "no"  # noqa: E731
    g = res["goals_met"]
    lines = [
        f"# Network evaluation (held-out synthetic {res.get('split', 'test')} split)",
        "",
        f"{res['n_images']} {res.get('split', 'test')} images at {res['resolution']} px, data `{res['data']}`, {res['date']}.",
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
        f"| mask IoU | {res['mask_iou']:.4f} | >= 0.95 | {ok(g['mask_iou'])} |",
        f"| mask coverage (share of true mask kept) | {res['mask_coverage']:.4f} | | |",
        "",
        "Depth and correspondence above are the networks' outputs over the true mask. The maps as the "
        "Predictor hands them on are zero where the predicted mask is off; counting those pixels as errors:",
        "",
        "| maps with the predicted mask applied | value |",
        "|---|---|",
        f"| depth mean error (%) | {res['masked_output']['depth_mean']:.2f} |",
        f"| depth 90% largest mean (%) | {res['masked_output']['depth_top10']:.2f} |",
        f"| correspondence mean error (mm) | {res['masked_output']['corr_mean_mm']:.2f} |",
        f"| correspondence median error (mm) | {res['masked_output']['corr_median_mm']:.2f} |",
        "",
        f"Network time {res['net_seconds_per_image'] * 1000:.0f} ms per image (both networks, batched); "
        + views_text(res),
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


# (label, per-image key, lower is better)
COMPARED = (
    ("depth mean error (%)", "d_mean", True),
    ("depth median error (%)", "d_median", True),
    ("depth 90% largest mean (%)", "d_top10", True),
    ("correspondence mean error (mm)", "c_mean", True),
    ("correspondence median error (mm)", "c_median", True),
    ("mask IoU", "iou", False),
    ("mask coverage", "coverage", False),
)


def paired_rows(a, b, metrics, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Paired differences B - A of per-image values (``a[key]``, ``b[key]``: same images, same
    order; NaN where an image has none) for each ``(label, key, lower_is_better)`` of ``metrics``,
    with 95 % intervals from a bootstrap over the images."""
    n = len(a[metrics[0][1]])
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    rows = []
    for label, key, lower in metrics:
        va, vb = a[key], b[key]
        ok = np.isfinite(va) & np.isfinite(vb)
        d = np.where(ok, vb - va, 0.0)
        boot = d[idx].sum(1) / np.maximum(ok[idx].sum(1), 1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        better = (d < 0) if lower else (d > 0)
        rows.append(
            {
                "metric": label,
                "a": float(va[ok].mean()),
                "b": float(vb[ok].mean()),
                "diff": float(d[ok].mean()),
                "ci95": [float(lo), float(hi)],
                "b_better_share": float(better[ok].mean()),
                "significant": bool(hi < 0 or lo > 0),
                "lower_is_better": lower,
            }
        )
    return rows


def compare(dir_a, dir_b, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of two evaluations of the same test images (``per_image.npz`` of each).

    For each metric: the mean over images for A and B, the difference B - A, its 95 % confidence
    interval from a paired bootstrap over the images, and the share of images on which B is better.
    """
    a = np.load(Path(dir_a) / PER_IMAGE_FILE)
    b = np.load(Path(dir_b) / PER_IMAGE_FILE)
    split_a = str(a["split"]) if "split" in a.files else "test"
    split_b = str(b["split"]) if "split" in b.files else "test"
    if str(a["data"]) != str(b["data"]) or split_a != split_b or len(a["iou"]) != len(b["iou"]):
        raise ValueError(
            f"not the same images: {dir_a} has {len(a['iou'])} of {a['data']} ({split_a} split), "
            f"{dir_b} has {len(b['iou'])} of {b['data']} ({split_b} split)"
        )
    n = len(a["iou"])
    rows = paired_rows(a, b, COMPARED, n_boot, seed)
    return {"a": str(dir_a), "b": str(dir_b), "n_images": n, "split": split_a, "rows": rows}


def compare_markdown(cmp: dict) -> str:
    lines = [
        f"# Paired comparison on {cmp['n_images']} {cmp.get('split', 'test')} images",
        "",
        f"A: `{cmp['a']}`  ",
        f"B: `{cmp['b']}`",
        "",
        "95 % confidence intervals of B - A from a paired bootstrap over the images (2000 resamples).",
        "",
        "| metric | A | B | B - A | 95 % CI | relative | images where B is better |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in cmp["rows"]:
        rel = r["diff"] / r["a"] * 100 if r["a"] else float("nan")
        lines.append(
            f"| {r['metric']} | {r['a']:.4g} | {r['b']:.4g} | {r['diff']:+.3g} | "
            f"[{r['ci95'][0]:+.3g}, {r['ci95'][1]:+.3g}]{'' if r['significant'] else ' (n.s.)'} | "
            f"{rel:+.1f} % | {r['b_better_share'] * 100:.0f} % |"
        )
    return "\n".join(lines) + "\n"


class _CheckpointPredictor:
    """A Predictor built from a run folder's checkpoint via a temporary fp16 export."""

    def __new__(cls, run: str, ckpt: str, threads: int, flip_average: bool = True, rotations=(), scales=()):
        from ..core.predict import Predictor
        from .export_weights import export

        d = tempfile.mkdtemp(prefix="p2v_eval_")
        export(run, d, ckpt)
        return Predictor(d, threads, flip_average=flip_average, rotations=rotations, scales=scales)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="exported weights folder (config.json + safetensors)")
    src.add_argument("--run", help="training run folder; evaluates its checkpoint (exported to fp16 first)")
    src.add_argument(
        "--compare", nargs=2, metavar=("OUT_A", "OUT_B"), help="paired comparison of two evaluation folders"
    )
    ap.add_argument("--ckpt", default="latest.pt")
    ap.add_argument(
        "--data", default="synth", help="'synth' (test split on the fly), 'fake' or a shard folder"
    )
    ap.add_argument("--n", type=int, default=500, help="number of test images (the report needs >= 500)")
    ap.add_argument(
        "--out", help="output folder for report.md, metrics.json, per_image.npz, error_maps.png "
        "(with --compare: where comparison.md and comparison.json go; optional)"
    )
    ap.add_argument(
        "--split", default="test", choices=["test", "val"],
        help="held-out split: 'test' for reported figures, 'val' for choosing anything (default test)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-flip", action="store_true", help="single pass: no averaging with the mirrored crop"
    )
    ap.add_argument(
        "--rotations", type=float, nargs="*", default=None, metavar="DEG",
        help="in-plane angles of extra views to average (default: the Predictor's, -5 5); "
        "give the option with no angle for none (the crop and, unless --no-flip, its mirror image)",
    )
    ap.add_argument(
        "--scales", type=float, nargs="*", default=None, metavar="S",
        help="magnifications of zoomed views to average as well (default: the Predictor's, none)",
    )
    a = ap.parse_args(argv)
    if a.compare:
        cmp = compare(*a.compare)
        md = compare_markdown(cmp)
        if a.out:
            out = Path(a.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "comparison.md").write_text(md)
            (out / "comparison.json").write_text(json.dumps(cmp, indent=2))
        print(md)
        return 0
    if not a.out:
        ap.error("--out is required to evaluate weights")
    from ..core.predict import DEFAULT_ROTATIONS, DEFAULT_SCALES, Predictor

    flip = not a.no_flip
    rot = DEFAULT_ROTATIONS if a.rotations is None else tuple(a.rotations)
    sca = DEFAULT_SCALES if a.scales is None else tuple(a.scales)
    pred = (
        Predictor(a.weights, a.threads, flip_average=flip, rotations=rot, scales=sca)
        if a.weights
        else _CheckpointPredictor(a.run, a.ckpt, a.threads, flip, rot, sca)
    )
    res = evaluate(pred, a.data, a.n, a.out, split=a.split)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
