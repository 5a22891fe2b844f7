"""Measure network configurations: parameters, fp16 safetensors size, CPU inference and training speed.

    .venv/bin/python scripts/bench_networks.py [--threads 2] [--configs 128:32:256 256:64:512 ...]

Prints a markdown table, one row per config (resolution:ngf:max_channels[:num_downs]):
parameters of one network, its fp16 safetensors file size in MiB (the larger of the two
networks), the CPU inference time of both networks for one crop, and one training step of both
networks (forward + backward, batch --batch) per image. Figures go to docs/reference/networks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from pix2vertex_addon.core.nets import define_net  # noqa: E402

DEFAULT_CONFIGS = [
    "256:64:512",  # the paper
    "256:32:256",
    "256:32:512",
    "128:64:512",
    "128:32:256",
    "128:32:512",
    "128:16:256",
    "128:24:384",
    "64:32:256",
]


def fp16_mib(net: torch.nn.Module) -> float:
    sd = {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in net.state_dict().items()
        if v.is_floating_point()
    }
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "w.safetensors")
        save_file(sd, p)
        return os.path.getsize(p) / 2**20


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="training batch for the train-step column")
    ap.add_argument("--no-train", action="store_true", help="skip the training-step column")
    ap.add_argument(
        "--views", action="store_true",
        help="also time Predictor.predict on one crop with the shipped weights for each view setting",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"# torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        "| R | ngf | cap | downs | params/net (M) | fp16 MiB (geometry) | infer both (s) | train step both (s/img) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for cfg in args.configs:
        parts = [int(p) for p in cfg.split(":")]
        r, ngf, cap = parts[:3]
        nd = parts[3] if len(parts) > 3 else None
        g = define_net("geometry", r, ngf, cap, num_downs=nd)
        c = define_net("correspondence", r, ngf, cap, num_downs=nd)
        n_params = sum(p.numel() for p in g.parameters()) / 1e6
        mib = fp16_mib(g)
        x = torch.rand(1, 3, r, r) * 2 - 1
        g.eval(), c.eval()

        def infer(g=g, c=c, x=x):
            with torch.inference_mode():
                g(x), c(x)

        t_inf = timeit(infer, args.repeats)
        t_train = float("nan")
        if not args.no_train:
            g.train(), c.train()
            xb = torch.rand(args.batch, 3, r, r) * 2 - 1
            opt = torch.optim.Adam(list(g.parameters()) + list(c.parameters()), 1e-4)

            def step(g=g, c=c, xb=xb, opt=opt):
                opt.zero_grad()
                loss = g(xb).abs().mean() + c(xb).abs().mean()
                loss.backward()
                opt.step()

            t_train = timeit(step, max(1, args.repeats // 2)) / args.batch
        downs = len(g.unet.channels)
        print(
            f"| {r} | {ngf} | {cap} | {downs} | {n_params:.2f} | {mib:.1f} | {t_inf:.3f} | {t_train:.3f} |",
            flush=True,
        )
    if args.views:
        views_table(args.threads, args.repeats)
    return 0


def views_table(threads: int, repeats: int) -> None:
    """Predictor.predict on one crop (shipped weights): single pass, the mirrored pair, six views
    (turned by -5/+5 degrees, each mirrored) and ten (also zoomed by 0.95/1.05), in one run."""
    import numpy as np

    from pix2vertex_addon.core.predict import Predictor

    crop = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    rows = [
        ("single pass", False, (), ()),
        ("crop + mirror", True, (), ()),
        ("turned -5/+5, mirrored", True, (-5.0, 5.0), ()),
        ("turned and zoomed 0.95/1.05, mirrored", True, (-5.0, 5.0), (0.95, 1.05)),
    ]
    print()
    print("| Predictor.predict, one crop | views | s (median) | x single |")
    print("|---|---|---|---|")
    base = None
    for label, flip, rot, sca in rows:
        p = Predictor(threads=threads, flip_average=flip, rotations=rot, scales=sca)
        t = timeit(lambda p=p: p.predict(crop), repeats)
        base = base or t
        n = (2 if flip else 1) * len(p.views)
        print(f"| {label} | {n} | {t:.3f} | {t / base:.1f} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
