"""Train the geometry and correspondence networks together (one batch feeds both).

    python -m pix2vertex_addon.training.train --name r128 [--resolution 128 --ngf 32 --max-channels 192]
    python -m pix2vertex_addon.training.train --name r128 --resume          # continue the last checkpoint
    python -m pix2vertex_addon.training.train --name g --init-weights pix2vertex_addon/weights \
        --max-minutes 8     # start from exported weights; stop (checkpointed) after 8 minutes

Each run lives in ``--runs-dir/NAME`` (default /work/p2v_runs): ``opts.json`` (the resolved
options), ``latest.pt`` (checkpoint, written every ``--ckpt-minutes`` and at the end, atomically),
``best.pt`` (best validation score), ``log.jsonl`` (training losses and validation metrics).
Checkpoints hold only tensors and plain numbers (loadable with ``torch.load(weights_only=True)``).
Data: ``--data synth`` generates faces on the fly in DataLoader workers, ``--data fake`` is a toy
set for tests, anything else is a folder (or glob) of ``.npz`` shards. Training sample i of a run
is sample ``--data-offset`` + i of the training split: a chunk that continues other weights
(``--init-weights``) should start past the samples they saw, or it trains on them again.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..core.atomic import atomic_file
from ..core.nets import XYZ_SCALE_MM, define_net
from .data import make_dataset
from .losses import LossWeights, correspondence_loss, geometry_loss
from .metrics import corr_errors_mm, depth_errors, mask_iou, summarize

DEFAULT_RUNS_DIR = "/work/p2v_runs"


class NetLossOptions:
    """The network and loss-weight options shared by :class:`TrainOptions` and the fast chunk's."""

    resolution: int
    ngf: int
    max_channels: int
    num_downs: int | None
    norm: str
    w_xyz: float
    w_normals: float
    w_mask: float
    w_corr: float

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.w_xyz, self.w_normals, self.w_mask, self.w_corr)

    def net_kwargs(self) -> dict:
        return dict(
            resolution=self.resolution,
            ngf=self.ngf,
            max_channels=self.max_channels,
            num_downs=self.num_downs,
            norm=self.norm,
        )


@dataclass
class TrainOptions(NetLossOptions):
    name: str = "run"
    runs_dir: str = DEFAULT_RUNS_DIR
    # network
    resolution: int = 128
    ngf: int = 32
    max_channels: int = 192
    num_downs: int | None = None
    norm: str = "batch"
    nets: list = field(default_factory=lambda: ["geometry", "correspondence"])
    # optimisation (pix2pix defaults)
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 8
    iters: int = 100_000
    lr_decay_start: int = 0  # 0: constant; else linear decay to 0 from this iteration to `iters`
    w_xyz: float = 100.0
    w_normals: float = 10.0
    w_mask: float = 20.0
    w_corr: float = 100.0
    normals_warmup: int = 1000  # the normals weight ramps linearly from 0 over these iterations
    # data
    data: str = "synth"
    val_data: str = ""  # '' -> same source as --data (split 'val')
    val_size: int = 64
    workers: int = 1
    fresh_per_step: int = (
        0  # >0: each step takes this many new samples plus (batch_size - fresh) from a replay pool
    )
    pool_size: int = 2000  # replay pool of recent samples (only with --fresh-per-step)
    # bookkeeping
    val_every: int = 500
    log_every: int = 50
    ckpt_minutes: float = 5.0
    max_minutes: float = 0.0  # >0: stop after this much wall time (checkpointed), e.g. for GPU chunks
    init_weights: str = ""  # exported weights folder (config.json + safetensors) to start from
    data_offset: int = 0  # index of the first training sample; give chunks that continue a run unseen data
    seed: int = 0
    threads: int = 2
    device: str = "auto"


def parse_args(argv=None) -> tuple[TrainOptions, bool]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainOptions):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not f.default_factory else None  # noqa: E721
        if f.name == "nets":
            ap.add_argument(flag, nargs="+", default=None, choices=["geometry", "correspondence"])
        elif f.name == "num_downs":
            ap.add_argument(flag, type=int, default=None)
        else:
            ap.add_argument(flag, type=type(f.default), default=None, help=f"default {default}")
    ap.add_argument("--resume", action="store_true", help="continue from RUN/latest.pt with RUN/opts.json")
    a = vars(ap.parse_args(argv))
    resume = a.pop("resume")
    given = {k: v for k, v in a.items() if v is not None}
    opts = TrainOptions()
    if resume:
        run_dir = Path(given.get("runs_dir", opts.runs_dir)) / given.get("name", opts.name)
        saved = json.loads((run_dir / "opts.json").read_text())
        opts = TrainOptions(**saved)
    for k, v in given.items():  # command-line values override (e.g. --iters when resuming)
        setattr(opts, k, v)
    return opts, resume


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the legacy global, for library code that uses it)
    torch.manual_seed(seed)


def _atomic_save(obj, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def build_nets(opts: TrainOptions, device) -> dict:
    return {n: define_net(n, **opts.net_kwargs()).to(device) for n in opts.nets}


@torch.no_grad()
def validate(nets: dict, batches: list, corr_scale_mm, device) -> dict:
    """Losses-free quick metrics on a fixed validation set (same protocol as evaluate.py)."""
    for n in nets.values():
        n.eval()
    d_err, c_err, ious = [], [], []
    for b in batches:
        img = b["image"].to(device)
        mask = b["mask"][:, 0].numpy() > 0.5
        if "geometry" in nets:
            out = nets["geometry"](img).float().cpu()
            z = (out[:, 2] * XYZ_SCALE_MM).numpy()
            pm = out[:, 3].numpy() > 0
            for k in range(len(z)):
                d_err.append(summarize(depth_errors(z[k], b["xyz"][k, 2].numpy(), mask[k]))["mean"])
                ious.append(mask_iou(pm[k], mask[k]))
        if "correspondence" in nets:
            c = nets["correspondence"](img).float().cpu().numpy().transpose(0, 2, 3, 1)
            tc = b["corr"].numpy().transpose(0, 2, 3, 1)
            for k in range(len(c)):
                c_err.append(np.median(corr_errors_mm(c[k], tc[k], mask[k], corr_scale_mm)))
    for n in nets.values():
        n.train()
    res = {}
    if d_err:
        res.update(depth_mean_pct=float(np.mean(d_err)), mask_iou=float(np.mean(ious)))
    if c_err:
        res.update(corr_median_mm=float(np.mean(c_err)))
    return res


def score(val: dict) -> float:
    """Lower is better: depth % + corr mm / 2 + (1 - IoU) * 20 (each about 1 at the goal)."""
    return (
        val.get("depth_mean_pct", 0) / 2.0
        + val.get("corr_median_mm", 0) / 2.0
        + (1 - val.get("mask_iou", 1)) * 20
    )


def corr_scale_for(data: str) -> np.ndarray:
    if data == "fake":
        return np.array([100.0, 100.0, 100.0])
    from ..core.correspondence import corr_to_mm_scale
    from ..core.face_model import load_face_model

    return corr_to_mm_scale(load_face_model())


class ReplayPool:
    """Ring buffer of recent samples: when generating a sample costs more than a training step on
    it (on-the-fly rendering on a small CPU), each fresh batch is topped up with random older ones."""

    def __init__(self, size: int, seed: int):
        self.size, self.store, self.n, self.head = size, None, 0, 0
        self.gen = torch.Generator().manual_seed(seed)

    def mix(self, fresh: dict, batch_size: int) -> dict:
        k = len(fresh["image"])
        if self.store is None:
            self.store = {
                key: torch.empty((self.size,) + v.shape[1:], dtype=v.dtype) for key, v in fresh.items()
            }
        extra = min(batch_size - k, self.n)
        idx = torch.randint(0, max(self.n, 1), (extra,), generator=self.gen)
        out = {key: torch.cat([v, self.store[key][idx]]) for key, v in fresh.items()}
        pos = (torch.arange(k) + self.head) % self.size
        for key, v in fresh.items():
            self.store[key][pos] = v
        self.head = (self.head + k) % self.size
        self.n = min(self.n + k, self.size)
        return out


def load_exported(nets: dict, opts: TrainOptions, weights_dir) -> None:
    """Initialise ``nets`` from an exported weights folder (fp16 safetensors, as shipped)."""
    from ..core.predict import load_weights_into

    weights_dir = Path(weights_dir)
    cfg = json.loads((weights_dir / "config.json").read_text())
    arch = cfg["architecture"]
    mine = opts.net_kwargs()
    diff = {k: (arch.get(k), v) for k, v in mine.items() if arch.get(k) != v}
    if diff:
        raise ValueError(f"{weights_dir} was trained with another architecture: {diff} (theirs, ours)")
    for n, net in nets.items():
        load_weights_into(net, weights_dir / cfg["files"][n])


def lr_factor(opts: TrainOptions, it: int) -> float:
    """Learning-rate multiplier at iteration ``it``: 1, or from ``--lr-decay-start`` a linear
    decay reaching 0 at ``--iters``."""
    if opts.lr_decay_start and it >= opts.lr_decay_start:
        return max(0.0, 1 - (it - opts.lr_decay_start) / max(1, opts.iters - opts.lr_decay_start))
    return 1.0


def _configure_device(opts: TrainOptions) -> torch.device:
    torch.set_num_threads(opts.threads)
    device = pick_device(opts.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


class Trainer:
    """One run of :func:`train`: networks, optimisers, their schedulers, data, log, checkpoints."""

    def __init__(self, opts: TrainOptions, resume: bool = False):
        self.opts, self.resume = opts, resume
        self.t_start = time.time()
        self.device = _configure_device(opts)
        self.run_dir = Path(opts.runs_dir) / opts.name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.run_dir / "latest.pt"
        seed_everything(opts.seed)
        self.nets = build_nets(opts, self.device)
        self.optims = {
            n: torch.optim.Adam(m.parameters(), lr=opts.lr, betas=(opts.beta1, 0.999)) for n, m in self.nets.items()
        }
        self.start, self.best, self.elapsed0 = self._restore()
        self.scheds = {
            n: torch.optim.lr_scheduler.LambdaLR(o, lambda k: lr_factor(opts, self.start + k))
            for n, o in self.optims.items()
        }
        self.weights = opts.loss_weights()

    def _restore(self) -> tuple[int, float, float]:
        """(first iteration, best score, elapsed seconds) from the checkpoint or the init weights."""
        opts = self.opts
        if self.resume:
            if not self.ckpt_path.exists():
                raise FileNotFoundError(f"{self.ckpt_path} not found: nothing to resume (drop --resume to start)")
            ck = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
            for n in self.nets:
                self.nets[n].load_state_dict(ck["nets"][n])
                self.optims[n].load_state_dict(ck["optims"][n])
                for pg in self.optims[n].param_groups:  # --lr given on resume wins over the saved one
                    pg["lr"] = pg["initial_lr"] = opts.lr
            torch.set_rng_state(ck["torch_rng"])
            return int(ck["iter"]), float(ck["best"]), float(ck.get("elapsed_s", 0.0))
        if opts.init_weights:
            load_exported(self.nets, opts, opts.init_weights)
            if opts.data_offset == 0:
                print(
                    "warning: --init-weights with --data-offset 0 replays the training stream from its start; "
                    "samples the init weights were trained on are not new to them (pass --data-offset)",
                    file=sys.stderr,
                )
        return 0, float("inf"), 0.0

    def loader(self) -> DataLoader:
        opts = self.opts
        remaining = max(0, opts.iters - self.start)
        per_step = opts.fresh_per_step or opts.batch_size
        if per_step > opts.batch_size:
            raise ValueError(f"--fresh-per-step {per_step} exceeds --batch-size {opts.batch_size}")
        ds = make_dataset(opts.data, "train", opts.resolution, remaining * per_step,
                          offset=opts.data_offset + self.start * per_step)
        return DataLoader(
            ds,
            batch_size=per_step,
            shuffle=False,
            num_workers=opts.workers,
            drop_last=True,
            persistent_workers=False,
            prefetch_factor=4 if opts.workers else None,
            pin_memory=self.device.type == "cuda",
        )

    def save(self, path: Path, it: int, elapsed: float) -> None:
        _atomic_save(
            {
                "nets": {n: m.state_dict() for n, m in self.nets.items()},
                "optims": {n: o.state_dict() for n, o in self.optims.items()},
                "iter": it,
                "best": self.best,
                "elapsed_s": elapsed,
                "torch_rng": torch.get_rng_state(),
            },
            path,
        )

    def step(self, batch: dict, it: int) -> dict:
        """One optimiser step of each network on ``batch``; the unweighted loss terms."""
        opts, nets, device = self.opts, self.nets, self.device
        img = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device)
        parts: dict = {}
        if "geometry" in nets:
            ramp = min(1.0, (it + 1) / opts.normals_warmup) if opts.normals_warmup > 0 else 1.0
            w_it = replace(self.weights, normals=self.weights.normals * ramp)
            loss_g, p = geometry_loss(nets["geometry"](img), batch["xyz"].to(device), mask, w_it)
            self.optims["geometry"].zero_grad(set_to_none=True)
            loss_g.backward()
            self.optims["geometry"].step()
            parts.update(p)
        if "correspondence" in nets:
            loss_c, p = correspondence_loss(nets["correspondence"](img), batch["corr"].to(device), mask,
                                            self.weights)
            self.optims["correspondence"].zero_grad(set_to_none=True)
            loss_c.backward()
            self.optims["correspondence"].step()
            parts.update(p)
        for s in self.scheds.values():
            s.step()
        return parts

    def run(self, progress: bool = True) -> dict:
        """Train up to ``--iters`` (or ``--max-minutes``); returns the last validation metrics."""
        from tqdm import tqdm

        opts, start = self.opts, self.start
        (self.run_dir / "opts.json").write_text(json.dumps(asdict(opts), indent=2))
        log = open(self.run_dir / "log.jsonl", "a")

        def log_line(d):
            log.write(json.dumps(d) + "\n")
            log.flush()

        log_line({"event": "start", "iter": start, "device": str(self.device),
                  "time": time.strftime("%Y-%m-%d %H:%M:%S"), "resume": self.resume})
        loader = self.loader()
        pool = ReplayPool(opts.pool_size, opts.seed + start) if opts.fresh_per_step else None
        val_src = opts.val_data or opts.data
        val_ds = make_dataset(val_src, "val", opts.resolution, opts.val_size)
        val_batches = None  # generated lazily at the first validation
        corr_scale = corr_scale_for(val_src)
        bar = tqdm(total=opts.iters, initial=start, disable=not progress,
                   mininterval=10 if not sys.stderr.isatty() else 0.1, dynamic_ncols=True)
        it, t0 = start, time.time()
        last_ckpt = t0
        val: dict = {}
        running: dict = {}
        elapsed = lambda: self.elapsed0 + time.time() - t0  # noqa: E731
        for n in self.nets.values():
            n.train()
        for batch in loader:
            if pool is not None:
                batch = pool.mix(batch, opts.batch_size)
            parts = self.step(batch, it)
            it += 1
            for k, v in parts.items():
                running[k] = running.get(k, 0.0) + v
            running["n"] = running.get("n", 0) + 1
            bar.update(1)
            out_of_time = opts.max_minutes > 0 and time.time() - self.t_start > opts.max_minutes * 60
            if it % opts.log_every == 0 or it == opts.iters:
                avg = {k: v / running["n"] for k, v in running.items() if k != "n"}
                bar.set_postfix({k: f"{v:.4f}" for k, v in avg.items()})
                log_line({"event": "train", "iter": it, "elapsed_s": round(elapsed(), 1), **avg})
                running = {}
            if it % opts.val_every == 0 or it == opts.iters or out_of_time:
                if val_batches is None:
                    val_batches = list(DataLoader(val_ds, batch_size=opts.batch_size, num_workers=0))
                val = validate(self.nets, val_batches, corr_scale, self.device)
                sc = score(val)
                log_line({"event": "val", "iter": it, "elapsed_s": round(elapsed(), 1), "score": sc, **val})
                bar.write(f"[val {it}] " + " ".join(f"{k}={v:.4f}" for k, v in val.items()))
                if sc < self.best:
                    self.best = sc
                    self.save(self.run_dir / "best.pt", it, elapsed())
            if time.time() - last_ckpt > opts.ckpt_minutes * 60 or it == opts.iters or out_of_time:
                self.save(self.ckpt_path, it, elapsed())
                last_ckpt = time.time()
            if out_of_time:
                bar.write(f"stopping at iteration {it}: --max-minutes {opts.max_minutes} reached")
                break
        if it == start or not self.ckpt_path.exists():
            self.save(self.ckpt_path, it, elapsed())
        bar.close()
        log_line({"event": "end", "iter": it, "elapsed_s": round(elapsed(), 1)})
        log.close()
        return {"iter": it, **val}


def train(opts: TrainOptions, resume: bool = False, progress: bool = True) -> dict:
    """Run (or continue) training; returns the last validation metrics."""
    return Trainer(opts, resume).run(progress)


def main(argv=None) -> int:
    opts, resume = parse_args(argv)
    res = train(opts, resume)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
