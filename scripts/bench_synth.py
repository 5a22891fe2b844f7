"""Benchmark the synthetic data generator: samples per second at 256 and 512 px.

    .venv/bin/python scripts/bench_synth.py [--count 40] [--resolutions 256 512] [--workers 1 2]

Rows: the whole generator (``generate_sample``) in 1..N worker processes (one torch thread
each, as in DataLoader workers), the rasteriser alone, and, when CUDA is available, the
rasteriser on the GPU. Besides wall-clock samples/s it reports the CPU time per sample, which
other jobs on a shared machine disturb much less. Prints the machine, the load average (other jobs on a shared machine
slow every row) and a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _init():
    import torch

    torch.set_num_threads(1)
    from pix2vertex_addon.core.face_model import load_face_model

    load_face_model()


def _gen(args):
    seed, res = args
    from pix2vertex_addon.core.synth import generate_sample

    c0 = time.process_time()
    generate_sample(seed, res)
    return time.process_time() - c0


def bench_generator(res: int, count: int, workers: int) -> tuple[float, float]:
    """(samples/s, CPU seconds per sample) for ``count`` samples in ``workers`` processes."""
    jobs = [(1000 + i, res) for i in range(count)]
    warm = [(i, res) for i in range(2 * workers)]
    with mp.get_context("spawn").Pool(workers, initializer=_init) as pool:
        pool.map(_gen, warm, chunksize=1)
        t0 = time.perf_counter()
        cpu = pool.map(_gen, jobs, chunksize=2)
        dt = time.perf_counter() - t0
    return count / dt, sum(cpu) / count


def _posed_mesh(res):
    import numpy as np

    from pix2vertex_addon.core.face_model import load_face_model
    from pix2vertex_addon.core.synth import generate_sample
    from pix2vertex_addon.core.synth.mesh import render_mesh

    model = load_face_model()
    rm = render_mesh(model)
    s = generate_sample(3, res, model=model, clean=True)
    m = s["meta"]
    v = model.sample_face(m["identity"], m["expression"])[: rm.n_vertices]
    X = (v * 10.0) @ m["rotation"].T + m["translation_mm"]
    return np.ascontiguousarray(X), rm.triangles, m["focal_px"]


def bench_raster(res: int, count: int, device: str = "cpu") -> float:
    import numpy as np
    import torch

    from pix2vertex_addon.core.synth import rasterize

    X, T, f = _posed_mesh(res)
    Xt = torch.as_tensor(X, device=device)
    Tt = torch.as_tensor(np.array(T), device=device)
    for _ in range(3):
        rasterize(Xt, Tt, f, res, cull_backfaces=True, return_numpy=False)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(count):
        rasterize(Xt, Tt, f, res, cull_backfaces=True, return_numpy=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - t0)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=40, help="samples per measurement")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    print(f"command : {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"date    : {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"machine : {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    la0 = os.getloadavg()
    print(f"load    : {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f} (1/5/15 min) before the run")
    rows = []
    for res in a.resolutions:
        for w in a.workers:
            sps, cpu = bench_generator(res, a.count, w)
            rows.append((f"generate_sample, {w} process{'es' if w > 1 else ''}", res, sps, 1000 * cpu))
        sps = bench_raster(res, a.count)
        rows.append(("rasterize only (CPU, 1 thread)", res, sps, 1000 / sps))
        if torch.cuda.is_available():
            sps = bench_raster(res, a.count, "cuda")
            rows.append(("rasterize only (CUDA)", res, sps, 1000 / sps))
    la1 = os.getloadavg()
    print(f"load    : {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f} (1/5/15 min) after the run\n")
    print("| what | resolution | samples/s (wall clock) | CPU ms per sample |")
    print("|---|---|---|---|")
    for name, res, sps, ms in rows:
        print(f"| {name} | {res} | {sps:.1f} | {ms:.1f} |")
    print("\nCPU ms per sample: process CPU time of the generator (the rasteriser rows: wall time, one"
          "\nthread). On N otherwise idle cores, N processes give about N * 1000 / (CPU ms) samples/s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
