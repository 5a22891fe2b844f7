"""Side-by-side sheet: the same seeds through the batched generator (top row) and the
per-sample generator (bottom row).

    .venv/bin/python scripts/batched_sheet.py [--out docs/reference/batched_synth.png] [--resolution 128]
        [--seeds 1000000000 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/reference/batched_synth.png"))
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1_000_000_000 + i for i in range(8)])
    a = ap.parse_args(argv)
    import numpy as np

    from pix2vertex_addon.core.images import save_png_atomic
    from pix2vertex_addon.training.batch_synth import BatchGenerator
    from pix2vertex_addon.training.synth import generate_sample

    gen = BatchGenerator(a.resolution, "cpu")
    top = gen.render(gen.params(a.seeds), as_uint8=True)["image"].permute(0, 2, 3, 1).numpy()
    bottom = [generate_sample(s, a.resolution)["image"] for s in a.seeds]
    sheet = np.concatenate([np.concatenate(list(top), 1), np.concatenate(bottom, 1)], 0)
    save_png_atomic(a.out, sheet)
    print(f"wrote {a.out} ({len(a.seeds)} seeds, {a.resolution} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
