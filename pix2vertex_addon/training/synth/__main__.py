"""Command line of the synthetic data generator (no ``bpy``).

    python -m pix2vertex_addon.training.synth make-dataset --count N --resolution R --out DIR \\
        --seed S --split train|val|test [--shard-size 256] [--workers 2] [--dtype float16]
    python -m pix2vertex_addon.training.synth contact-sheet --count 32 --out docs/synth_contact_sheet.png

``--seed`` is the first seed *within* the split's seed range (see ``sampling.SPLITS``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def depth_vis(xyz: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(R, R, 3) uint8 grey depth (near bright) of the masked pixels."""
    out = np.zeros(mask.shape + (3,), dtype=np.uint8)
    if mask.any():
        z = xyz[..., 2][mask]
        zn = (z - z.min()) / (np.ptp(z) + 1e-6)
        out[mask] = (40 + 215 * (1 - zn))[:, None].astype(np.uint8)
    return out


def contact_sheet(count: int, out: str | os.PathLike, resolution: int = 128, seed: int = 0,
                  split: str = "train", per_row: int = 4, model_path: str | None = None) -> Path:
    """PNG grid: for each sample, image | depth | correspondence | mask."""
    from PIL import Image
    from tqdm import tqdm

    from ...core.atomic import atomic_file
    from ...core.face_model import load_synth_face_model
    from .generator import generate_sample
    from .sampling import seed_range

    model = load_synth_face_model(model_path)
    start = seed_range(split).start + seed
    R = resolution
    gap = max(2, R // 32)
    rows = (count + per_row - 1) // per_row
    W = per_row * (4 * R + gap) - gap
    H = rows * (R + gap) - gap
    sheet = np.full((H, W, 3), 255, dtype=np.uint8)
    for i in tqdm(range(count), desc="contact sheet", unit="sample"):
        s = generate_sample(start + i, R, model=model)
        m = s["mask"]
        tiles = [s["image"], depth_vis(s["xyz"], m), (s["corr"] * 255 + 0.5).astype(np.uint8),
                 np.repeat(m[..., None], 3, axis=2).astype(np.uint8) * 255]
        r, c = divmod(i, per_row)
        y, x = r * (R + gap), c * (4 * R + gap)
        sheet[y:y + R, x:x + 4 * R] = np.concatenate(tiles, axis=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        Image.fromarray(sheet).save(tmp)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pix2vertex_addon.training.synth",
                                 description="Synthetic face data (image + xyz/corr/mask labels).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    md = sub.add_parser("make-dataset", help="write npz shards with an index (resumable)")
    md.add_argument("--count", type=int, required=True)
    md.add_argument("--resolution", type=int, default=256)
    md.add_argument("--out", required=True)
    md.add_argument("--seed", type=int, default=0, help="first seed within the split's range")
    md.add_argument("--split", choices=["train", "val", "test"], default="train")
    md.add_argument("--shard-size", type=int, default=256)
    md.add_argument("--workers", type=int, default=1, help="generator processes")
    md.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                    help="storage of xyz/corr (float16: ~0.05 mm steps at 100 mm)")
    md.add_argument("--no-compress", action="store_true")
    md.add_argument("--clean", action="store_true", help="no occluders/degradations/crop jitter")
    md.add_argument("--face-model", default=None, help="path of ict_facekit.npz")
    cs = sub.add_parser("contact-sheet", help="PNG grid of samples: image, depth, corr, mask")
    cs.add_argument("--count", type=int, default=32)
    cs.add_argument("--out", default="docs/synth_contact_sheet.png")
    cs.add_argument("--resolution", type=int, default=128, help="tile side")
    cs.add_argument("--seed", type=int, default=0)
    cs.add_argument("--split", choices=["train", "val", "test"], default="train")
    cs.add_argument("--per-row", type=int, default=4)
    cs.add_argument("--face-model", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "make-dataset":
        from .dataset import make_dataset

        idx = make_dataset(a.out, a.count, a.resolution, a.seed, a.split, a.shard_size, a.workers,
                           a.dtype, not a.no_compress, a.face_model,
                           {"clean": True} if a.clean else None)
        print(f"wrote {idx}")
    else:
        out = contact_sheet(a.count, a.out, a.resolution, a.seed, a.split, a.per_row, a.face_model)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
