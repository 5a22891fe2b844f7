"""Time the extension's warm-up with the layout tables computed and loaded from the disk cache.

    .venv/bin/python scripts/bench_layout_cache.py [--folder DIR] [--repeats 1] [--texture-size 2048]

Runs ``Pipeline(None).warm_up(PipelineOptions(detail=True), detail_texture_sizes=(2048,))`` (what
Blender's background warm-up runs) in a fresh Python process without a disk folder (computed
only), in another with an empty cache folder (the tables computed and written), then in a third
with it filled (the tables loaded), each ``--repeats`` times (alternating), and prints the median and least warm-up time, the part of it in
``results.prepare_layouts``, what each layout cache computed and loaded, and the folder's size.
The folder is a temporary one unless ``--folder`` is given (then it is emptied first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, script_argv  # noqa: E402

# One fresh process: the pipeline built (not timed), then its warm-up timed.
_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pix2vertex_addon.core import layout_cache, results
from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions
layout_cache.set_disk_folder(sys.argv[2] or None)
size = int(sys.argv[3])
pipeline = Pipeline(None)
spent = []
prepare = results.prepare_layouts
def timed_prepare(*args, **kwargs):
    t = time.perf_counter()
    prepare(*args, **kwargs)
    spent.append(time.perf_counter() - t)
results.prepare_layouts = timed_prepare
t = time.perf_counter()
pipeline.warm_up(PipelineOptions(detail=True), detail_texture_sizes=(size,))
total = time.perf_counter() - t
print(json.dumps({"warm_up_s": total, "prepare_layouts_s": sum(spent),
                  "caches": {c.name: [c.computes, c.loads] for c in layout_cache.all_caches()}}))
"""


def _run(folder: Path | None, size: int) -> dict:
    env = dict(os.environ)
    env.pop("P2V_LAYOUT_CACHE", None)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(folder or ""), str(size)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"error: the warm-up process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.glob("*.npz") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=None, help="cache folder (emptied first); default temporary")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each case (computed, loaded)")
    ap.add_argument("--texture-size", type=int, default=2048, help="the detail image's size (Blender: 2048)")
    args = ap.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="p2v-layout-cache-"))
    try:
        rows = []
        for _ in range(max(1, args.repeats)):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            rows.append(("computed, disk off", _run(None, args.texture_size)))
            rows.append(("computed (empty folder)", _run(folder, args.texture_size)))
            rows.append(("loaded (filled folder)", _run(folder, args.texture_size)))
        n, nbytes = _size(folder)
        print(f"median (min) of {max(1, args.repeats)} runs each, seconds")
        print("| case | warm_up | prepare_layouts |")
        print("|---|---|---|")
        for case in dict(rows):
            runs = [r for name, r in rows if name == case]
            cells = []
            for field in ("warm_up_s", "prepare_layouts_s"):
                v = [r[field] for r in runs]
                cells.append(f"{statistics.median(v):.2f} ({min(v):.2f})")
            print(f"| {case} | {cells[0]} | {cells[1]} |")
        print(f"\nfolder: {n} files, {nbytes / 1e6:.1f} MB")
        print("computes / loads per cache:")
        for name, r in rows[1:3]:
            print(f"  {name}: " + ", ".join(f"{k} {c}/{ld}" for k, (c, ld) in r["caches"].items()))
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(script_argv())
