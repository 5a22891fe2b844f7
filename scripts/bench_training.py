"""Side by side, in one run: the batched generator and the fast training step for each
architecture and input size (training/fast_train.py), on the device at hand.

    python scripts/bench_training.py [--configs two-nets:128 two-heads:128 two-nets:256 two-heads:256]
        [--batch 64] [--steps 30] [--compile] [--ngf 32 --max-channels 192]

Per configuration: generator alone (samples/s), training step alone on one fixed batch
(s per step, samples/s), both together with fresh samples every step (samples/s, s per step,
GPU busy share from NVML when it answers), the losses after the timed steps (all from the same
initial weights and seeds, so the rows compare), parameter count and the fp16 size of one
exported network, and one CPU forward pass of one network on one crop. Prints a markdown table
for docs/reference/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench_config(arch: str, res: int, a) -> dict:
    import tempfile

    import torch

    from pix2vertex_addon.core.nets import define_net
    from pix2vertex_addon.training.batch_synth import BatchGenerator
    from pix2vertex_addon.training.fast_train import FastOptions, FastTrainer, _gpu_busy

    opts = FastOptions(out=tempfile.mkdtemp(prefix="p2v_bench_"), resolution=res, ngf=a.ngf,
                       max_channels=a.max_channels, arch=arch, batch_size=a.batch, compile=a.compile,
                       threads=a.threads, device=a.device)
    tr = FastTrainer(opts)
    dev = tr.device
    gen = BatchGenerator(res, dev)
    seeds = lambda i: range(5_000_000 + i * a.batch, 5_000_000 + (i + 1) * a.batch)  # noqa: E731
    params = [gen.params(seeds(i)) for i in range(a.steps + 3)]  # drawn ahead: device time only
    for i in range(3):
        tr.step(gen.render(params[i]))
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(a.steps):
        gen.render(params[3 + i])
    _sync(dev)
    t_gen = time.perf_counter() - t0
    fixed = gen.render(params[0])
    t0 = time.perf_counter()
    for _ in range(a.steps):
        tr.step(fixed)
    _sync(dev)
    t_step = time.perf_counter() - t0
    busy = []
    t0 = time.perf_counter()
    for i in range(a.steps):
        t = tr.step(gen.render(params[3 + i]))
        if dev.type == "cuda" and i % 5 == 4:
            g = _gpu_busy()
            if g is not None:
                busy.append(g)
    _sync(dev)
    t_both = time.perf_counter() - t0
    n_par = sum(p.numel() for p in tr.model.parameters())
    one = define_net("geometry", res, a.ngf, a.max_channels)
    mib = sum(p.numel() for p in one.state_dict().values() if p.is_floating_point()) * 2 / 2**20
    one.eval()
    x = torch.zeros(1, 3, res, res)
    torch.set_num_threads(a.threads)
    with torch.no_grad():
        one(x)
        c0 = time.perf_counter()
        one(x)
        cpu_fwd = time.perf_counter() - c0
    n = a.steps * a.batch
    return {
        "config": f"{arch} {res}px", "gen_sps": n / t_gen, "step_s": t_step / a.steps, "step_sps": n / t_step,
        "both_sps": n / t_both, "both_s": t_both / a.steps,
        "busy": sum(busy) / len(busy) if busy else None, "total": float(t["total"]),
        "params_m": n_par / 1e6, "mib": mib, "cpu_fwd": cpu_fwd,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["two-nets:128", "two-heads:128", "two-nets:256",
                                                      "two-heads:256"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--max-channels", type=int, default=192)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    import torch

    print(f"command : {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"date    : {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and a.device != "cpu" else "CPU"
    print(f"device  : {dev}, torch {torch.__version__}, batch {a.batch}, {a.steps} timed steps, "
          f"compile {a.compile}\n")
    rows = []
    for c in a.configs:
        arch, res = c.split(":")
        rows.append(bench_config(arch, int(res), a))
        r = rows[-1]
        print(f"  {r['config']}: generator {r['gen_sps']:.0f}/s, step {r['step_s']:.3f} s, "
              f"both {r['both_sps']:.0f}/s", flush=True)
    print("\n| configuration | generator samples/s | train step s (samples/s) | generate + train samples/s (s per step) "
          "| GPU busy | loss after | parameters | MiB per network (fp16) | CPU forward, 1 crop |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        busy = f"{100 * r['busy']:.0f} %" if r["busy"] is not None else "n/a"
        print(f"| {r['config']} | {r['gen_sps']:.0f} | {r['step_s']:.3f} ({r['step_sps']:.0f}) | "
              f"{r['both_sps']:.0f} ({r['both_s']:.3f}) | {busy} | {r['total']:.2f} | {r['params_m']:.1f} M | "
              f"{r['mib']:.1f} | {1000 * r['cpu_fwd']:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
