"""Write pix2vertex_addon/weights/MODEL_CARD.md from the exported weights and an evaluation.

    python -m pix2vertex_addon.training.model_card --weights pix2vertex_addon/weights \
        --eval OUT_OF_EVALUATE [--hardware "..."] [--status "..."]

Takes the architecture, source run, iteration and training time from ``config.json``, the
sha256 of each weights file (recomputed), the training curve from the run's ``log.jsonl``, and the
Table-1 metrics from ``OUT/metrics.json`` of ``training.evaluate``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.export import sha256_file as sha256
from .evaluate import GOALS, views_text

REPO = Path(__file__).resolve().parents[2]


def _val_curve(logs: list[Path]) -> list[dict]:
    """Validation events of one run, or of chained runs (each started from the previous one's
    export), with the iterations counted on across the chain."""
    out, offset = [], 0
    for p in logs:
        if not p.exists():
            continue
        events = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        for e in events:
            if e.get("event") == "val":
                out.append({**e, "iter": e["iter"] + offset})
        ends = [e["iter"] for e in events if e.get("event") == "end"]
        offset += ends[-1] if ends else 0
    return out


def write_card(weights_dir, eval_dir, hardware: str, status: str, notes: str = "") -> str:
    weights_dir = Path(weights_dir)
    cfg = json.loads((weights_dir / "config.json").read_text())
    res = json.loads((Path(eval_dir) / "metrics.json").read_text())
    a, src = cfg["architecture"], cfg["source"]
    run_dir = Path(src["run"])
    if "options" in src:  # chained runs (GPU chunks): options and logs recorded in config.json
        opts, logs = dict(src["options"]), [REPO / f for f in src.get("logs", [])]
    else:
        opts = json.loads((run_dir / "opts.json").read_text()) if (run_dir / "opts.json").exists() else {}
        logs = [run_dir / "log.jsonl"]
    curve = _val_curve(logs)
    ok = lambda b: "**met**" if b else "not met"  # noqa: E731
    g = res["goals_met"]
    L = [
        "# Model card: pix2vertex image-to-geometry networks",
        "",
        "Two image-to-image networks (reimplementing Sela et al., ICCV 2017, *Unrestricted Facial Geometry "
        "Reconstruction Using Image-to-Image Translation*): **geometry** maps a face crop to per-pixel x, y, z "
        "(mm, label frame of docs/reference/conventions.md) and a face mask; **correspondence** maps it to canonical "
        "template coordinates in [0, 1]. Inference: `pix2vertex_addon.core.predict.Predictor`.",
        "",
        "## Data",
        "Synthetic faces rendered on the fly by `pix2vertex_addon.training.synth` from the ICT-FaceKit morphable "
        "model (USC ICT, MIT licence): random identity, expression, pose, lighting, skin/hair appearance, "
        "backgrounds, occluders and camera degradations, with exact labels. Train, validation and test are "
        "disjoint seed ranges with one identity per seed, so test identities are never seen in training. "
        "No real photos were used for training.",
        "",
        "## Architecture",
        f"pix2pix U-Net with skip connections, {len(bin(a['resolution'])) - 3 if not a.get('num_downs') else a['num_downs']} "
        f"stride-2 levels (1x1 bottleneck), first width ngf = {a['ngf']}, channel cap {a['max_channels']}, "
        f"{a['norm']} norm, dropout in the three inner decoder blocks, then 1x1 convolutions C64-C32-Cout "
        "(geometry: 4 outputs, xyz / 100 mm + mask logit; correspondence: 3). One network per output. "
        f"Input resolution **{a['resolution']} x {a['resolution']}** RGB. Choices and measurements: docs/reference/networks.md.",
        "",
        "## Training",
        f"- run `{run_dir}`, checkpoint `{src['checkpoint']}` at iteration **{src['iter']}**, "
        f"training time **{src['train_time_s'] / 3600:.2f} h** ({src['train_time_s'] / 60:.1f} min)",
    ]
    for ch in src.get("chunks", []):
        L.append(f"  - chunk {ch['chunk']}: from {ch['init']}, {ch['iters']} iterations, {ch['train_s'] / 60:.1f} min")
    L.append(f"- hardware: {src.get('hardware', hardware)}")
    if opts:
        L.append(
            f"- Adam lr {opts['lr']} (beta1 {opts['beta1']}), batch {opts['batch_size']} "
            f"({opts.get('fresh_per_step') or opts['batch_size']} freshly rendered + replay pool of "
            f"{opts.get('pool_size')}), losses: {opts['w_xyz']} x L1(xyz) + {opts['w_normals']} x L1(normals) + "
            f"{opts['w_mask']} x BCE(mask); {opts['w_corr']} x L1(correspondence); seed {opts['seed']}"
        )
        if "lr_schedule" in opts:
            L.append(f"- learning rate: {opts['lr_schedule']}")
        if "commands" in src:
            L.append("- commands (`python -m pix2vertex_addon.training.train ...`, on the GPU machine):")
            L += [f"  - `{c}`" for c in src["commands"]]
        else:
            L.append(
                f"- options: `{run_dir / 'opts.json'}`; command: `python -m pix2vertex_addon.training.train "
                f"--name {opts['name']} --resume`"
            )
    if curve:
        L += [
            "",
            "Validation during training (48 validation-split images; depth % without the full Table-1 "
            "averaging, correspondence median mm, mask IoU):",
            "",
            "| iteration | depth mean % | corr median mm | mask IoU |",
            "|---|---|---|---|",
        ]
        step = max(1, len(curve) // 12)
        for v in curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else []):
            L.append(
                f"| {v['iter']} | {v.get('depth_mean_pct', float('nan')):.2f} | "
                f"{v.get('corr_median_mm', float('nan')):.2f} | {v.get('mask_iou', float('nan')):.3f} |"
            )
    L += [
        "",
        "## Evaluation (held-out synthetic test split)",
        f"`python -m pix2vertex_addon.training.evaluate --weights pix2vertex_addon/weights --n {res['n_images']} "
        f"--out OUT`, {res['date']}: {res['n_images']} test images at {res['resolution']} px. Depth error = "
        "absolute error in percent of the ground-truth depth range after a RANSAC fit of a global scale and "
        "shift along the depth axis, over the ground-truth mask (the paper's Table 1); per-image statistics "
        "averaged over the images. Depth and correspondence are the networks' outputs over the ground-truth "
        "mask (as the training validation scores them); the predicted mask is scored by its IoU and coverage. "
        "Inference: " + views_text(res),
        "",
        "| metric | value | goal |",
        "|---|---|---|",
        f"| depth mean error (%) | {res['depth_mean']:.2f} | <= {GOALS['depth_mean']} ({ok(g['depth_mean'])}) |",
        f"| depth std (%) | {res['depth_std']:.2f} | |",
        f"| depth median error (%) | {res['depth_median']:.2f} | |",
        f"| depth 90% largest (mean of the largest 10 %) | {res['depth_top10']:.2f} | <= {GOALS['depth_top10']} "
        f"({ok(g['depth_top10'])}) |",
        f"| correspondence mean error (mm) | {res['corr_mean_mm']:.2f} | |",
        f"| correspondence median error (mm) | {res['corr_median_mm']:.2f} | <= {GOALS['corr_median_mm']} "
        f"({ok(g['corr_median_mm'])}) |",
        f"| mask IoU | {res['mask_iou']:.4f} | >= {GOALS['mask_iou']} ({ok(g['mask_iou'])}) |",
    ]
    if "mask_coverage" in res:
        mo = res["masked_output"]
        L += [
            f"| mask coverage (share of the true mask it keeps) | {res['mask_coverage']:.4f} | |",
            "",
            "The maps as the Predictor hands them on are zero where the predicted mask is off. Counting each "
            "true-mask pixel the mask drops as an error at depth 0 and correspondence 0 (as earlier cards "
            f"reported): depth mean {mo['depth_mean']:.2f} %, 90 % largest "
            f"{mo['depth_top10']:.2f} %, correspondence mean {mo['corr_mean_mm']:.2f} mm, median "
            f"{mo['corr_median_mm']:.2f} mm.",
        ]
    L += [
        "",
        "The goals follow the paper's Table 1 figures for its full-width 256 px network; this network is "
        f"{a['resolution']} px and narrower (docs/reference/networks.md).",
        "",
        f"**Status:** {status}",
        "",
        "Error heat maps of a few test samples: `error_maps.png` of the evaluation output.",
        "Real photos: docs/real_photos_networks.png.",
    ]
    if notes:
        L += ["", notes.rstrip()]
    L += ["", "## Files", "", "| file | size (MiB) | sha256 |", "|---|---|---|"]
    for name, fn in cfg["files"].items():
        digest = sha256(weights_dir / fn)
        if digest != cfg["sha256"][name]:
            raise ValueError(f"{fn} does not match the sha256 in config.json; re-export the weights")
        L.append(f"| {fn} | {(weights_dir / fn).stat().st_size / 2**20:.2f} | `{digest}` |")
    L += ["", "fp16 safetensors (no pickle); `config.json` holds the architecture and these hashes.", ""]
    text = "\n".join(L)
    (weights_dir / "MODEL_CARD.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(Path(__file__).resolve().parents[1] / "weights"))
    ap.add_argument("--eval", required=True, help="output folder of training.evaluate (metrics.json)")
    ap.add_argument("--hardware", default="2-core x86_64 VM CPU (no GPU), torch CPU, shared with other jobs")
    ap.add_argument("--status", default="see the table: goals met or not")
    ap.add_argument("--notes", default="", help="markdown appended after the evaluation")
    ap.add_argument(
        "--notes-file",
        default=str(REPO / "docs" / "model_card_notes.md"),
        help="markdown file appended after the evaluation (default docs/model_card_notes.md, if present)",
    )
    a = ap.parse_args(argv)
    notes = a.notes
    if a.notes_file and Path(a.notes_file).exists():
        notes = (notes + "\n\n" if notes else "") + Path(a.notes_file).read_text()
    write_card(a.weights, a.eval, a.hardware, a.status, notes)
    print(Path(a.weights) / "MODEL_CARD.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
