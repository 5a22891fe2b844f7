"""Export a training checkpoint as fp16 safetensors weights for :class:`core.predict.Predictor`.

    python -m pix2vertex_addon.training.export_weights --run /work/p2v_runs/NAME [--ckpt latest.pt] \
        --out pix2vertex_addon/weights

Writes ``geometry.safetensors``, ``correspondence.safetensors`` (fp16, no pickle) and
``config.json`` (architecture, resolution, source checkpoint, iteration, sha256 of each file);
each file is written to a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..core.atomic import atomic_file, write_json_atomic
from ..core.export import sha256_file

MAX_FILE_MIB = 16.0


def export(run_dir, out_dir, ckpt: str = "latest.pt") -> dict:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    opts = json.loads((run_dir / "opts.json").read_text())
    ck = torch.load(run_dir / ckpt, map_location="cpu", weights_only=True)
    for name in ("geometry", "correspondence"):
        if name not in ck["nets"]:
            raise KeyError(f"{run_dir / ckpt} has no {name} network (trained with --nets {opts['nets']})")
    return write_weights(
        out_dir,
        {name: ck["nets"][name] for name in ("geometry", "correspondence")},
        {k: opts[k] for k in ("resolution", "ngf", "max_channels", "num_downs", "norm")},
        {
            "run": str(run_dir),
            "checkpoint": ckpt,
            "iter": int(ck["iter"]),
            "train_time_s": round(float(ck.get("elapsed_s", 0.0))),
        },
        metadata={"iter": str(ck["iter"])},
    )


def write_weights(out_dir, state_dicts: dict, architecture: dict, source: dict, metadata=None) -> dict:
    """Write one fp16 safetensors file per network (``state_dicts``: name -> state dict) and
    ``config.json`` (architecture, sha256 and size of each file, ``source``) to ``out_dir``; each
    file goes to a temporary name first and is renamed. ValueError if a file exceeds 16 MiB."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, hashes, sizes = {}, {}, {}
    for name, state in state_dicts.items():
        sd = {
            k: v.detach().to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous()
            for k, v in state.items()
            if not k.endswith("num_batches_tracked")
        }
        fn = f"{name}.safetensors"
        with atomic_file(out_dir / fn, mode=0o644) as tmp:
            save_file(sd, str(tmp), metadata={"network": name, **(metadata or {})})
            mib = os.path.getsize(tmp) / 2**20
            if mib > MAX_FILE_MIB:
                raise ValueError(f"{fn} would be {mib:.1f} MiB > {MAX_FILE_MIB} MiB; train a smaller network")
        files[name], hashes[name], sizes[name] = fn, sha256_file(out_dir / fn), round(mib, 2)
    cfg = {
        "architecture": architecture,
        "xyz_scale_mm": 100.0,
        "files": files,
        "sha256": hashes,
        "size_mib": sizes,
        "source": source,
    }
    write_json_atomic(out_dir / "config.json", cfg)
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder with opts.json and the checkpoint")
    ap.add_argument("--ckpt", default="latest.pt", help="latest.pt or best.pt")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "weights"))
    a = ap.parse_args(argv)
    print(json.dumps(export(a.run, a.out, a.ckpt), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
