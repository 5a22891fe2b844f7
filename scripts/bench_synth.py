"""Benchmark the synthetic data generator: samples per second at 256 and 512 px.

    .venv/bin/python scripts/bench_synth.py [--count 40] [--resolutions 256 512] [--workers 1 2]
        [--baseline DIR]

Rows: the whole generator (``generate_sample``) in 1..N worker processes (one torch thread
each, as in DataLoader workers), the rasteriser alone, and, when CUDA is available, the
rasteriser on the GPU. Besides wall-clock samples/s it reports the CPU time per sample, which
other jobs on a shared machine disturb much less. Prints the machine, the load average (other jobs on a shared machine
slow every row) and a markdown table for docs/reference/benchmarks.md.

``--baseline DIR`` (a folder holding an older ``pix2vertex_addon/``, e.g. from
``git archive <commit> pix2vertex_addon | tar -x -C DIR``) adds rows that time the baseline's
generator and this tree's alternately, sample by sample, in one process with one torch thread:
a before/after comparison that the load of other jobs affects alike.
Every worker decodes the natural-image backgrounds before timing (a one-off cost per process).
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
    from pix2vertex_addon.core.face_model import load_synth_face_model
    from pix2vertex_addon.training.synth.photos import preload_photos

    load_synth_face_model()
    preload_photos()  # once per process; the steady state is what a long run sees


def _gen(args):
    seed, res = args
    from pix2vertex_addon.training.synth import generate_sample

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


def bench_against(baseline: Path, res: int, count: int) -> tuple[float, float]:
    """CPU ms per sample of the baseline's generator and of this tree's, timed alternately
    (same seeds, one process, one torch thread)."""
    import importlib
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="p2v_baseline_"))
    try:
        shutil.copytree(baseline / "pix2vertex_addon", tmp / "p2v_baseline")
        sys.path.insert(0, str(tmp))
        base_fm = importlib.import_module("p2v_baseline.core.face_model")
        # the generator's package: training/synth since the move out of the core, core/synth before
        synth = "training.synth" if (baseline / "pix2vertex_addon" / "training" / "synth").is_dir() else "core.synth"
        base_gen = importlib.import_module(f"p2v_baseline.{synth}").generate_sample
        base_photos = importlib.import_module(f"p2v_baseline.{synth}.photos")
        from pix2vertex_addon.core.face_model import load_synth_face_model
        from pix2vertex_addon.training.synth import generate_sample
        from pix2vertex_addon.training.synth.photos import preload_photos

        mb, mn = base_fm.load_face_model(), load_synth_face_model()
        for p in base_photos.photo_sources():
            base_photos._load(p)
        preload_photos()
        for i in range(4):
            base_gen(i, res, mb)
            generate_sample(i, res, mn)
        tb = tn = 0.0
        for i in range(count):
            c0 = time.process_time()
            base_gen(1000 + i, res, mb)
            c1 = time.process_time()
            generate_sample(1000 + i, res, mn)
            tb, tn = tb + c1 - c0, tn + time.process_time() - c1
        return 1000 * tb / count, 1000 * tn / count
    finally:
        sys.path.remove(str(tmp))
        for name in [m for m in sys.modules if m == "p2v_baseline" or m.startswith("p2v_baseline.")]:
            del sys.modules[name]
        shutil.rmtree(tmp, ignore_errors=True)


def _posed_mesh(res):
    import numpy as np

    from pix2vertex_addon.core.face_model import load_synth_face_model
    from pix2vertex_addon.training.synth import generate_sample
    from pix2vertex_addon.training.synth.mesh import render_mesh

    model = load_synth_face_model()
    rm = render_mesh(model)
    s = generate_sample(3, res, model=model, clean=True)
    m = s["meta"]
    v = model.sample_face(m["identity"], m["expression"])[: rm.n_vertices]
    X = (v * 10.0) @ m["rotation"].T + m["translation_mm"]
    return np.ascontiguousarray(X), rm.triangles, m["focal_px"]


def bench_raster(res: int, count: int, device: str = "cpu") -> float:
    import numpy as np
    import torch

    from pix2vertex_addon.training.synth import rasterize

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


def bench_batched(res: int, count: int, batch: int, device: str, threads: int) -> tuple[float, float, float]:
    """(samples/s of the batched generator's device stage, CPU ms per sample of the parameter
    draws in one process, CPU ms per sample of the device stage) for ``count`` samples in
    batches of ``batch`` (training/batch_synth.py, every augmentation on). The parameters are
    drawn first, as DataLoader workers draw them ahead in training."""
    import torch

    from pix2vertex_addon.training.batch_synth import BatchGenerator

    torch.set_num_threads(threads)
    gen = BatchGenerator(res, device)
    gen.render(gen.params(range(batch)))  # warm-up (allocations, photo bank)
    n = max(1, count // batch)
    c0 = time.process_time()
    params = [gen.params(range(10_000 + i * batch, 10_000 + (i + 1) * batch)) for i in range(n)]
    t_par = time.process_time() - c0
    if device == "cuda":
        torch.cuda.synchronize()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for p in params:
        gen.render(p)
    if device == "cuda":
        torch.cuda.synchronize()
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    torch.set_num_threads(1)
    return n * batch / dt, 1000 * t_par / (n * batch), 1000 * cpu / (n * batch)


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
    ap.add_argument("--batched", type=int, default=0, metavar="B",
                    help="also time the batched generator in batches of B (CPU with --threads, and CUDA)")
    ap.add_argument("--batched-only", action="store_true", help="only the batched generator's rows")
    ap.add_argument("--cuda-batch", type=int, default=256, help="batch of the CUDA rows of --batched")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the batched CPU rows")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="folder with an older pix2vertex_addon/ to compare against (before/after rows)")
    a = ap.parse_args(argv)
    if a.baseline is not None and not (a.baseline / "pix2vertex_addon").is_dir():
        ap.error(f"--baseline {a.baseline}: no pix2vertex_addon/ folder in it")

    import torch

    torch.set_num_threads(1)
    print(f"command : {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"date    : {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"machine : {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}")
    la0 = os.getloadavg()
    print(f"load    : {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f} (1/5/15 min) before the run")
    rows = []
    for res in a.resolutions:
        if a.batched:
            sps, ms, cpu = bench_batched(res, a.count, a.batched, "cpu", a.threads)
            rows.append((f"BatchGenerator, CPU {a.threads} thread(s), batch {a.batched} (+ parameters: {ms:.1f} ms)",
                         res, sps, cpu))
            if torch.cuda.is_available():
                sps, ms, cpu = bench_batched(res, max(a.count, 8 * a.cuda_batch), a.cuda_batch, "cuda", 1)
                rows.append((f"BatchGenerator, CUDA, batch {a.cuda_batch} (+ parameters: {ms:.2f} CPU ms)",
                             res, sps, cpu))
        if a.batched_only:
            continue
        for w in a.workers:
            sps, cpu = bench_generator(res, a.count, w)
            rows.append((f"generate_sample, {w} process{'es' if w > 1 else ''}", res, sps, 1000 * cpu))
        if a.baseline is not None:
            ms_b, ms_n = bench_against(a.baseline, res, a.count)
            rows.append(("generate_sample, baseline (alternating, 1 process)", res, 1000 / ms_b, ms_b))
            rows.append(("generate_sample, this tree (alternating, 1 process)", res, 1000 / ms_n, ms_n))
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
          "\nthread). On N otherwise idle cores, N processes give about N * 1000 / (CPU ms) samples/s."
          "\nThe alternating rows' samples/s is 1000 / (CPU ms), not a wall-clock rate.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
