#!/usr/bin/env python
"""Accuracy of the head fit (core.head) on synthetic faces with known identity and expression.

Each face is a training-split sample of the project's generator (its identity and sparse ARKit
expression are known). ``--source registered`` (default) reconstructs it through the geometry
pipeline from its exact maps (the oracle stand-ins for detector and networks: affine RANSAC,
non-rigid ICP), so the input carries the registration's error; ``--source exact`` takes the true
face-region vertices (plus ``--noise-mm`` of i.i.d. noise). Errors are per-vertex distances in mm
over the face region after a rigid alignment to the true neutral face (mean, and the inner face
``narrow_face`` mean):

- identity: the fitted neutral person (ICT neutral + identity) against the true neutral face;
- neutralised: the head's Basis face (reconstruction minus the fitted expression) against it;
- not neutralised (raw): the reconstruction itself against it (what Basis would be without the step);
- input: the reconstruction against the true face with its expression (the registration's error).

Usage::

    .venv/bin/python scripts/bench_head.py [--faces 12] [--source registered|exact] [--max-yaw 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def aligned_error(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-vertex distance after the rigid fit of ``truth`` onto ``x``."""
    from pix2vertex_addon.core.camera import rigid_fit

    rot, t = rigid_fit(truth, x)
    return np.linalg.norm(x - (truth @ rot.T + t), axis=1)


def measure(model, seed: int, source: str, noise_mm: float, max_yaw: float) -> dict | None:
    from pix2vertex_addon.core.head import build_head
    from pix2vertex_addon.core.pipeline import PipelineOptions
    from pix2vertex_addon.training.synth import generate_sample

    sample = generate_sample(seed, 256, clean=True)
    meta = sample["meta"]
    if abs(meta["yaw_deg"]) > max_yaw:
        return None
    true_expr = model.sample_face(meta["identity"], meta["expression"], region="face") * 10.0
    true_neutral = model.sample_face(meta["identity"], None, region="face") * 10.0
    if source == "registered":
        from oracle import oracle_pipeline

        rec = oracle_pipeline(sample, model).reconstruct(sample["image"], PipelineOptions(detail=False))[0]
        face = rec.vertices_model
    else:
        face = true_expr + np.random.default_rng(seed).normal(scale=noise_mm, size=true_expr.shape)
    t0 = time.perf_counter()
    head = build_head(model, face)
    seconds = time.perf_counter() - t0
    fit = head.fit
    ident = (model.sample_face(fit.identity, None, region="face") * 10.0) @ fit.rotation.T + fit.translation
    inner = model.region_slice("narrow_face")
    out = {"seed": seed, "yaw": meta["yaw_deg"], "n_expr": len(meta["expression_active"]), "seconds": seconds,
           "fit_rms": fit.rms_mm}
    for key, x in (("identity", ident), ("neutralised", head.vertices[: head.face_count]), ("raw", face)):
        e = aligned_error(x, true_neutral)
        out[key] = float(e.mean())
        out[key + "_inner"] = float(e[inner].mean())
    out["input"] = float(aligned_error(face, true_expr).mean())
    out["expr_l1"] = float(np.abs(fit.expression - meta["expression"]).sum())
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=12)
    ap.add_argument("--source", choices=("registered", "exact"), default="registered")
    ap.add_argument("--noise-mm", type=float, default=0.0)
    ap.add_argument("--max-yaw", type=float, default=30.0, help="skip samples turned further (degrees)")
    args = ap.parse_args(argv)
    from pix2vertex_addon.core.face_model import load_synth_face_model
    from pix2vertex_addon.training.synth.sampling import seed_range

    model = load_synth_face_model()
    rows = []
    for seed in seed_range("train"):
        if len(rows) >= args.faces:
            break
        r = measure(model, seed, args.source, args.noise_mm, args.max_yaw)
        if r is not None:
            rows.append(r)
            print(f"seed {seed}: identity {r['identity']:.2f} mm, neutralised {r['neutralised']:.2f} mm, "
                  f"raw {r['raw']:.2f} mm", file=sys.stderr)
    cols = ["input", "identity", "identity_inner", "neutralised", "neutralised_inner", "raw", "raw_inner", "fit_rms",
            "expr_l1", "seconds"]
    print(f"source: {args.source}" + (f", noise {args.noise_mm} mm" if args.source == "exact" else "")
          + f"; {len(rows)} training-split faces with |yaw| <= {args.max_yaw} deg")
    print("| statistic | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, fn in (("mean", np.mean), ("max", np.max)):
        print(f"| {name} | " + " | ".join(f"{fn([r[c] for r in rows]):.3f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
