"""The shipped model card describes the shipped weights: its file hashes match, and the evaluation
command reproduces its table on the 500 test images (the issue's "reproduces from a fresh checkout")."""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

WEIGHTS = REPO / "pix2vertex_addon" / "weights"

# card row label -> (metrics.json key, tolerance: half a unit of the printed precision plus slack)
ROWS = {
    "depth mean error (%)": ("depth_mean", 0.006),
    "depth median error (%)": ("depth_median", 0.006),
    "depth 90% largest (mean of the largest 10 %)": ("depth_top10", 0.006),
    "correspondence mean error (mm)": ("corr_mean_mm", 0.006),
    "correspondence median error (mm)": ("corr_median_mm", 0.006),
    "mask IoU": ("mask_iou", 0.0002),
    "mask coverage (share of the true mask it keeps)": ("mask_coverage", 0.0002),
}


def _card_table(text: str) -> dict:
    out = {}
    for label in ROWS:
        m = re.search(r"^\| " + re.escape(label) + r" \| ([0-9.]+) \|", text, re.M)
        assert m, f"row {label!r} missing from MODEL_CARD.md"
        out[label] = float(m.group(1))
    return out


def test_card_hashes_match_the_weights():
    from pix2vertex_addon.core.export import sha256_file as sha256

    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    cfg = json.loads((WEIGHTS / "config.json").read_text())
    for name, fn in cfg["files"].items():
        digest = sha256(WEIGHTS / fn)
        assert digest == cfg["sha256"][name]
        assert f"| {fn} |" in card and digest in card


def test_evaluation_reproduces_the_card(tmp_path):
    from pix2vertex_addon.core.predict import Predictor
    from pix2vertex_addon.training.evaluate import evaluate

    card = _card_table((WEIGHTS / "MODEL_CARD.md").read_text())
    n = int(re.search(r"(\d+) test images at", (WEIGHTS / "MODEL_CARD.md").read_text()).group(1))
    assert n >= 500
    res = evaluate(Predictor(WEIGHTS, threads=2), "synth", n=n, out_dir=tmp_path, n_show=0, progress=False)
    for label, (key, tol) in ROWS.items():
        assert res[key] == pytest.approx(card[label], abs=tol), label
