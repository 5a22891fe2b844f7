"""Synthetic training data: faces rendered with exact per-pixel labels (no ``bpy``).

* :func:`generate_sample` renders one sample (image, xyz, corr, mask, meta) from a seed;
* :func:`split_of_seed` / :func:`seed_range`: train/val/test are disjoint seed ranges (and so
  never share identities);
* :class:`SynthDataset`: a picklable torch dataset generating samples on the fly in workers;
  :class:`ShardDataset` reads shards written by ``python -m pix2vertex_addon.training.synth``;
* :func:`rasterize` (``raster.py``): the z-buffer rasteriser, usable on its own.

See docs/reference/synth.md.
"""

from __future__ import annotations

from .generator import generate_sample
from .raster import project, rasterize
from .sampling import SPLITS, identity_id_of_seed, rotation_from_pose, seed_range, split_of_seed

__all__ = [
    "SPLITS",
    "ShardDataset",
    "SynthDataset",
    "generate_sample",
    "identity_id_of_seed",
    "project",
    "rasterize",
    "rotation_from_pose",
    "seed_range",
    "split_of_seed",
]


def __getattr__(name):
    # The datasets import torch.utils.data lazily.
    if name in ("SynthDataset", "ShardDataset"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
