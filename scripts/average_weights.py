"""Average exported weights (stochastic weight averaging over checkpoints of one training run).

    python scripts/average_weights.py --weights A B C --out OUT [--bn-samples 480]

Every floating-point tensor of each network is averaged over the given exported weights folders
(config.json + fp16 safetensors, all of the same architecture). With ``--bn-samples N`` > 0 the
BatchNorm running statistics are then recomputed for the averaged weights from N fresh
training-split renders (cumulative average, networks in training mode, no gradients), since the
average of the folders' statistics need not match the averaged weights. The result is written
as an exported folder (fp16, sha256 in config.json, ``source.averaged`` listing the inputs).

Averaging only helps for checkpoints of the same run at a low learning rate (one basin); decide
with ``evaluate --split val`` and ``evaluate --compare``, never on the test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def average_state_dicts(sds: list[dict]) -> dict:
    import torch

    keys = sds[0].keys()
    for sd in sds[1:]:
        if sd.keys() != keys or any(sd[k].shape != sds[0][k].shape for k in keys):
            raise ValueError("the weights folders hold different architectures")
    out = {}
    for k in keys:
        if sds[0][k].is_floating_point():
            out[k] = torch.stack([sd[k].float() for sd in sds]).mean(0)
        else:
            out[k] = sds[0][k]
    return out


def recompute_bn(
    nets: dict, resolution: int, n_samples: int, batch: int = 12, offset: int = 3_000_000, threads: int = 2
) -> None:
    """Reset and re-estimate every BatchNorm's running mean/var from ``n_samples`` training-split
    renders (the networks see them exactly as in training: train mode, dropout on)."""
    import torch

    from pix2vertex_addon.training.data import SynthFaces, sample_to_tensors

    torch.set_num_threads(threads)
    bns = [m for net in nets.values() for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    for net in nets.values():
        net.train()
    ds = SynthFaces("train", resolution, n_samples, offset=offset)
    with torch.no_grad():
        for i0 in range(0, n_samples, batch):
            img = torch.stack([sample_to_tensors(ds.raw(i))["image"] for i in range(i0, min(n_samples, i0 + batch))])
            for net in nets.values():
                net(img)
    for m in bns:
        m.momentum = 0.1
    for net in nets.values():
        net.eval()


def main(argv=None) -> int:
    from safetensors.torch import load_file

    from pix2vertex_addon.core.nets import define_net
    from pix2vertex_addon.core.predict import load_config
    from pix2vertex_addon.training.export_weights import write_weights

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", required=True, help="exported weights folders to average")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bn-samples", type=int, default=0, help="recompute BatchNorm statistics from this many renders")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    cfgs = [load_config(w) for w in a.weights]
    if any(c["architecture"] != cfgs[0]["architecture"] for c in cfgs):
        raise SystemExit("the weights folders have different architectures: " + ", ".join(a.weights))
    arch = cfgs[0]["architecture"]
    nets = {}
    for name in ("geometry", "correspondence"):
        sds = [load_file(str(Path(w) / c["files"][name])) for w, c in zip(a.weights, cfgs)]
        sd = average_state_dicts(sds)
        net = define_net(
            name, resolution=arch["resolution"], ngf=arch["ngf"], max_channels=arch["max_channels"],
            num_downs=arch.get("num_downs"), norm=arch.get("norm", "batch"),
        )
        net.load_state_dict(sd, strict=False)
        nets[name] = net
    if a.bn_samples > 0:
        recompute_bn(nets, arch["resolution"], a.bn_samples, threads=a.threads)

    out = Path(a.out)
    try:
        write_weights(
            out,
            {name: net.state_dict() for name, net in nets.items()},
            arch,
            {
                "averaged": [{"weights": str(w), "source": c.get("source")} for w, c in zip(a.weights, cfgs)],
                "bn_recomputed_samples": a.bn_samples,
            },
            metadata={"averaged": str(len(a.weights))},
        )
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(f"wrote {out}: average of {len(a.weights)} folders, BatchNorm statistics "
          + (f"recomputed from {a.bn_samples} renders" if a.bn_samples else "averaged"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
