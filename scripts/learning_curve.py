"""Learning curve of the networks: test metrics against training samples, a power-law fit and the
training the goals would need at that rate.

    .venv/bin/python scripts/learning_curve.py \
        --point gB:/work/p2v_runs/evals/v2_gB:261696 --point gB2:...:651584 --point gB3:...:976608 \
        [--samples-per-minute 41000]

Each ``--point`` is ``LABEL:EVAL_DIR:SAMPLES``: an evaluation folder written by
``python -m pix2vertex_addon.training.evaluate`` and the number of training samples (iterations
times batch) behind those weights. For every goal metric it fits ``error = a * samples^-k``
(least squares in log-log; the mask IoU as 1 - IoU) and prints a markdown table: the metric at
each point, the exponent ``k`` and the samples at which the fit reaches the goal, also in minutes
of training at ``--samples-per-minute`` when given. An extrapolation from a few points of one
recipe, not a promise: say so when quoting it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pix2vertex_addon.training.evaluate import GOALS  # noqa: E402

# (label, metrics.json and GOALS key, fit 1 - value: an error that falls towards 0)
METRICS = (
    ("depth mean (%)", "depth_mean", False),
    ("depth 90% largest (%)", "depth_top10", False),
    ("corr. median (mm)", "corr_median_mm", False),
    ("mask IoU", "mask_iou", True),
)


def fit_power_law(samples, values):
    """Least-squares fit of log(values) = log(a) - k log(samples); returns (a, k)."""
    x = np.log(np.asarray(samples, np.float64))
    y = np.log(np.asarray(values, np.float64))
    slope, intercept = np.polyfit(x, y, 1)
    return float(math.exp(intercept)), float(-slope)


def samples_for(a: float, k: float, target: float) -> float:
    """Samples at which a * s^-k reaches target (inf when the fit does not fall)."""
    if k <= 0:
        return float("inf")
    return (a / target) ** (1.0 / k)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--point", action="append", required=True, help="LABEL:EVAL_DIR:SAMPLES")
    ap.add_argument("--samples-per-minute", type=float, default=0.0, help="training throughput")
    a = ap.parse_args(argv)
    points = []
    for p in a.point:
        label, folder, n = p.rsplit(":", 2)
        m = json.loads((Path(folder) / "metrics.json").read_text())
        points.append((label, float(n), m))
    if len(points) < 2:
        ap.error("need at least two points to fit")
    points.sort(key=lambda t: t[1])
    head = "| metric | " + " | ".join(f"{lab} ({n / 1e3:.0f} k)" for lab, n, _ in points)
    head += " | k | goal | samples to goal | x last |" + (" minutes |" if a.samples_per_minute else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, key, one_minus in METRICS:
        vals = [m[key] for _, _, m in points]
        err = [1 - v if one_minus else v for v in vals]
        goal = GOALS[key]
        target = 1 - goal if one_minus else goal
        amp, k = fit_power_law([n for _, n, _ in points], err)
        need = samples_for(amp, k, target)
        last = points[-1][1]
        row = f"| {label} | " + " | ".join(f"{v:.4g}" for v in vals)
        row += f" | {k:.3f} | {goal:g} | {need:.3g} | {need / last:.3g} |"
        if a.samples_per_minute:
            row += f" {need / a.samples_per_minute:.3g} |"
        lines.append(row)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
