"""A training chunk that keeps the GPU busy: fresh batched samples every step.

    python -m pix2vertex_addon.training.fast_train --out OUT/NAME --init-weights pix2vertex_addon/weights \\
        --data-offset 3000000 --max-minutes 9 [--arch two-heads] [--resolution 256] [--batch-size 64]

Each step renders ``--batch-size`` new training samples with :class:`.batch_synth.BatchGenerator`
on the device (their scene parameters drawn on the CPU by ``--workers`` DataLoader processes,
ahead of time) and takes one optimiser step of both outputs: bf16 autocast and channels_last on
CUDA, fused Adam, optionally ``torch.compile``; the losses stay on the device and are read back
only at log lines. ``--arch two-nets`` trains today's two U-Nets; ``--arch two-heads`` one U-Net
whose decoder features feed two heads (xyz + mask, correspondence). Both export as the two
standard weights files (the two-head export repeats the shared U-Net in each), so the Predictor
loads either. Training sample i of the chunk is training-split seed ``--data-offset`` + i.

The chunk stops after ``--max-minutes`` (or ``--iters``), validates on the validation split
through today's per-sample generator (``--val-size`` images, the protocol of ``train.validate``),
writes the fp16 export, ``log.jsonl`` and ``opts.json`` to ``--out`` and prints throughput
(samples/s, seconds per step, GPU busy share where NVML answers) and the validation figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.nets import define_net
from .batch_synth import BatchGenerator, draw_params
from .losses import geometry_terms, masked_l1
from .train import NetLossOptions

__all__ = ["FastOptions", "FastTrainer", "ParamBatches", "TwoHeadNet", "main"]

ARCHS = ("two-nets", "two-heads")


@dataclass
class FastOptions(NetLossOptions):
    out: str = ""
    resolution: int = 128
    ngf: int = 32
    max_channels: int = 192
    norm: str = "batch"
    arch: str = "two-nets"
    batch_size: int = 64
    lr: float = 2e-4
    lr_end: float = 0.25  # the learning rate decays linearly to lr * lr_end over the chunk
    beta1: float = 0.5
    w_xyz: float = 100.0
    w_normals: float = 10.0
    w_mask: float = 20.0
    w_corr: float = 100.0
    iters: int = 0  # 0: until --max-minutes
    max_minutes: float = 9.0
    init_weights: str = ""
    data_offset: int = 0
    val_size: int = 64
    workers: int = 2
    log_every: int = 25
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    threads: int = 2
    device: str = "auto"
    num_downs: int | None = None  # fixed by the resolution (exports record None)


class TwoHeadNet(nn.Module):
    """One U-Net, two 1x1 heads: ``forward`` gives (geometry (B, 4, R, R), correspondence (B, 3, R, R))."""

    def __init__(self, **net_kwargs):
        super().__init__()
        g = define_net("geometry", **net_kwargs)
        self.unet, self.head_g = g.unet, g.head
        self.head_c = define_net("correspondence", **net_kwargs).head

    def forward(self, x):
        f = torch.relu(self.unet(x))  # each head starts with an in-place ReLU: applied once here
        return self.head_g[1:](f), self.head_c[1:](f)

    def export_state(self) -> dict:
        """name -> state dict of a standard ``ImageToMapNet`` (the shared U-Net in each)."""
        u = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        return {"geometry": {**u, **{f"head.{k}": v for k, v in self.head_g.state_dict().items()}},
                "correspondence": {**u, **{f"head.{k}": v for k, v in self.head_c.state_dict().items()}}}

    def load_exported(self, geometry: dict, correspondence: dict) -> None:
        """Start from two exported networks: the geometry U-Net is the shared one."""
        self.unet.load_state_dict({k[5:]: v for k, v in geometry.items() if k.startswith("unet.")})
        self.head_g.load_state_dict({k[5:]: v for k, v in geometry.items() if k.startswith("head.")})
        self.head_c.load_state_dict({k[5:]: v for k, v in correspondence.items() if k.startswith("head.")})


class TwoNets(nn.Module):
    """Today's two networks behind the same interface as :class:`TwoHeadNet`."""

    def __init__(self, **net_kwargs):
        super().__init__()
        self.geometry = define_net("geometry", **net_kwargs)
        self.correspondence = define_net("correspondence", **net_kwargs)

    def forward(self, x):
        return self.geometry(x), self.correspondence(x)

    def export_state(self) -> dict:
        return {"geometry": self.geometry.state_dict(), "correspondence": self.correspondence.state_dict()}

    def load_exported(self, geometry: dict, correspondence: dict) -> None:
        self.geometry.load_state_dict(geometry)
        self.correspondence.load_state_dict(correspondence)


class ParamBatches(Dataset):
    """Item i: the scene parameters (numpy, :func:`.batch_synth.draw_params`) of training
    samples ``offset + i * batch .. + batch`` (DataLoader workers draw them ahead)."""

    def __init__(self, offset: int, batch: int, length: int, resolution: int, n_photos: int):
        self.offset, self.batch, self.length, self.R, self.n_photos = offset, batch, length, resolution, n_photos
        self._model = None

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        from ..core.face_model import load_synth_face_model
        from .synth import seed_range

        if self._model is None:
            self._model = load_synth_face_model()
        r = seed_range("train")
        seeds = [r[(self.offset + i * self.batch + k) % len(r)] for k in range(self.batch)]
        return draw_params(seeds, self.R, self._model, n_photos=self.n_photos)


def _state_of(weights_dir: Path, name: str) -> dict:
    from safetensors.torch import load_file

    cfg = json.loads((weights_dir / "config.json").read_text())
    return {k: v.float() for k, v in load_file(str(weights_dir / cfg["files"][name])).items()}


def _gpu_busy() -> float | None:
    try:
        return float(torch.cuda.utilization()) / 100.0
    except Exception:  # NVML missing or not answering
        return None


class FastTrainer:
    """Model, optimiser, schedule and one jitted-friendly step; :meth:`run` is the chunk."""

    def __init__(self, opts: FastOptions):
        if opts.arch not in ARCHS:
            raise ValueError(f"--arch must be one of {ARCHS}, got {opts.arch!r}")
        self.opts = opts
        dev = opts.device
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(opts.seed)
        cls = TwoHeadNet if opts.arch == "two-heads" else TwoNets
        self.model: TwoHeadNet | TwoNets = cls(**opts.net_kwargs())
        if opts.init_weights:
            self._check_architecture(Path(opts.init_weights))
            w = Path(opts.init_weights)
            self.model.load_exported(_state_of(w, "geometry"), _state_of(w, "correspondence"))
        self.model.to(self.device)
        self.memory_format = torch.channels_last if (opts.channels_last and self.cuda) else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.optim = torch.optim.Adam(self.model.parameters(), lr=opts.lr, betas=(opts.beta1, 0.999),
                                      fused=self.cuda)
        self.forward = torch.compile(self.model) if opts.compile else self.model
        self.w = opts.loss_weights()
        self.autocast = self.cuda and opts.bf16

    def _check_architecture(self, w: Path) -> None:
        arch = json.loads((w / "config.json").read_text())["architecture"]
        mine = self.opts.net_kwargs()
        diff = {k: (arch.get(k), v) for k, v in mine.items() if arch.get(k) != v}
        if diff:
            raise ValueError(f"{w} was trained with another architecture: {diff} (theirs, ours)")

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """The weighted total and the unweighted terms, all on the device."""
        img = batch["image"].contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            pg, pc = self.forward(img)
        pg, pc = pg.float(), pc.float()
        t = geometry_terms(pg, batch["xyz"], batch["mask"])
        t["corr"] = masked_l1(pc, batch["corr"], batch["mask"])
        w = self.w
        t["total"] = w.xyz * t["xyz"] + w.normals * t["normals"] + w.mask * t["mask"] + w.corr * t["corr"]
        return t

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimiser step on ``batch`` (tensors on the device); returns detached terms."""
        self.model.train()
        t = self.losses(batch)
        self.optim.zero_grad(set_to_none=True)
        t["total"].backward()
        self.optim.step()
        return {k: v.detach() for k, v in t.items()}

    def schedule(self, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LinearLR(self.optim, 1.0, self.opts.lr_end, total_iters=max(1, total_steps))

    def run(self, progress=print) -> dict:
        """Train until the time or step limit, validate, export; returns the summary."""
        o = self.opts
        if not o.out:
            raise ValueError("--out is required (the export folder)")
        out = Path(o.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "opts.json").write_text(json.dumps(asdict(o), indent=2))
        t_start = time.time()
        torch.set_num_threads(o.threads)
        gen = BatchGenerator(o.resolution, self.device)
        steps_cap = o.iters if o.iters > 0 else 10**9
        loader = DataLoader(ParamBatches(o.data_offset, o.batch_size, steps_cap, o.resolution, gen.n_photos),
                            batch_size=None, shuffle=False, num_workers=o.workers, pin_memory=self.cuda,
                            prefetch_factor=4 if o.workers else None, persistent_workers=False)
        # the schedule spans the step cap, or for a timed chunk the steps expected at the first
        # measured rate (re-planned once, after the warm-up steps)
        sched = self.schedule(o.iters if o.iters > 0 else 1000)
        log = open(out / "log.jsonl", "a")
        acc: dict[str, torch.Tensor] = {}
        it, n_acc, t_loop, busy = 0, 0, None, []
        rate_fixed = o.iters > 0
        for params in loader:
            if t_loop is None and it == 3:  # after compilation and warm-up
                if self.cuda:
                    torch.cuda.synchronize()
                t_loop, it_loop = time.time(), it
            batch = gen.render(gen.to_device(params))
            t = self.step(batch)
            sched.step()
            for k, v in t.items():
                acc[k] = acc[k] + v if k in acc else v
            n_acc += 1
            it += 1
            elapsed = time.time() - t_start
            if t_loop is not None and not rate_fixed and it - it_loop == 20:
                per = (time.time() - t_loop) / 20
                left = max(1, int((o.max_minutes * 60 - elapsed - 60) / per))
                sched = self.schedule(it + left)
                for _ in range(it):
                    sched.step()
                rate_fixed = True
            if it % o.log_every == 0:
                row = {"event": "train", "iter": it, "elapsed_s": round(elapsed, 1),
                       **{k: round(float(v) / n_acc, 5) for k, v in acc.items()},
                       "lr": self.optim.param_groups[0]["lr"]}
                g = _gpu_busy() if self.cuda else None
                if g is not None:
                    busy.append(g)
                log.write(json.dumps(row) + "\n")
                log.flush()
                progress(" ".join(f"{k}={v}" for k, v in row.items() if k != "event"))
                acc, n_acc = {}, 0
            if it >= steps_cap or (o.max_minutes > 0 and elapsed > o.max_minutes * 60 - 60):
                break
        if self.cuda:
            torch.cuda.synchronize()
        t_end = time.time()
        timed = it - (it_loop if t_loop is not None else 0)
        dt = t_end - (t_loop if t_loop is not None else t_start)
        val = self.validate()
        summary = {
            "event": "end", "iter": it, "samples": it * o.batch_size, "arch": o.arch, "resolution": o.resolution,
            "samples_per_s": round(timed * o.batch_size / dt, 1) if dt > 0 else None,
            "s_per_step": round(dt / max(timed, 1), 4),
            "gpu_busy": round(float(np.mean(busy)), 3) if busy else None,
            "train_time_s": round(t_end - t_start, 1), **val,
        }
        log.write(json.dumps(summary) + "\n")
        log.close()
        self.export(out, summary)
        return summary

    @torch.no_grad()
    def validate(self) -> dict:
        """``train.validate`` on the validation split (today's per-sample generator)."""
        from .data import make_dataset
        from .train import corr_scale_for, validate

        o = self.opts
        if o.val_size <= 0:
            return {}
        ds = make_dataset("synth", "val", o.resolution, o.val_size)
        batches = list(DataLoader(ds, batch_size=16, num_workers=0))
        nets = self._as_two_nets()
        return validate(nets, batches, corr_scale_for("synth"), self.device)

    def _as_two_nets(self) -> dict:
        st = self.model.export_state()
        nets = {}
        for name in ("geometry", "correspondence"):
            net = define_net(name, **self.opts.net_kwargs())
            net.load_state_dict(st[name])
            nets[name] = net.to(self.device)
        return nets

    def export(self, out: Path, summary: dict) -> dict:
        from .export_weights import write_weights

        source = {"run": f"fast_train chunk ({self.opts.arch})", "iter": summary["iter"],
                  "train_time_s": summary["train_time_s"], "data_offset": self.opts.data_offset,
                  "init_weights": self.opts.init_weights, "generator": "training.batch_synth",
                  "hardware": torch.cuda.get_device_name() if self.cuda else "CPU"}
        arch = {"resolution": self.opts.resolution, "ngf": self.opts.ngf, "max_channels": self.opts.max_channels,
                "num_downs": None, "norm": self.opts.norm}
        states = {n: {k: v.detach().cpu() for k, v in sd.items()} for n, sd in self.model.export_state().items()}
        return write_weights(out, states, arch, source)


def parse_args(argv=None) -> FastOptions:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(FastOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "num_downs":
            continue
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.name == "arch":
            ap.add_argument(flag, choices=ARCHS, default=f.default)
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default, help=f"default {f.default}")
    return FastOptions(**vars(ap.parse_args(argv)))


def main(argv=None) -> int:
    opts = parse_args(argv)
    if not opts.out:
        print("error: --out FOLDER is required (the export goes there)", file=sys.stderr)
        return 2
    if opts.init_weights and not (Path(opts.init_weights) / "config.json").is_file():
        print(f"error: --init-weights {opts.init_weights}: no config.json there", file=sys.stderr)
        return 2
    try:
        summary = FastTrainer(opts).run()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
