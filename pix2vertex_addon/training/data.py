"""Training data sources: on-the-fly synthetic faces (``training.synth``), shards, or a fake toy set.

Every source is a map-style ``torch.utils.data.Dataset`` whose item ``i`` is a dict of tensors:

* ``image``: float32 (3, R, R) in [-1, 1]
* ``xyz``: float32 (3, R, R) label frame, mm (0 outside the mask)
* ``corr``: float32 (3, R, R) in [0, 1] (0 outside the mask)
* ``mask``: float32 (1, R, R) in {0, 1}

Items are deterministic functions of (split, index), so a resumed run continues the same stream.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["sample_to_tensors", "FakeFaces", "SynthFaces", "ShardFaces", "make_dataset"]


def sample_to_tensors(s: dict) -> dict:
    """Convert a numpy sample dict (conventions.md maps) to channel-first tensors."""
    img = np.asarray(s["image"])
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"sample image must be uint8 (R, R, 3) (got {img.dtype} {img.shape})")
    return {
        "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0),
        "xyz": torch.from_numpy(np.ascontiguousarray(np.asarray(s["xyz"], np.float32).transpose(2, 0, 1))),
        "corr": torch.from_numpy(np.ascontiguousarray(np.asarray(s["corr"], np.float32).transpose(2, 0, 1))),
        "mask": torch.from_numpy(np.asarray(s["mask"], np.float32)[None].copy()),
    }


def fake_sample(seed: int, resolution: int) -> dict:
    """A toy 'face': a shaded ellipsoid of random size/position on a noisy background (tests only)."""
    rng = np.random.default_rng(seed)
    r = resolution
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32)
    cx, cy = r / 2 + rng.uniform(-0.05, 0.05, 2) * r
    a, b = rng.uniform(0.25, 0.35, 2) * r
    u, v = (xx - cx) / a, (yy - cy) / b
    q = 1 - u**2 - v**2
    mask = q > 0
    mm_per_px = 200.0 / r
    z = np.where(mask, -np.sqrt(np.clip(q, 0, 1)) * 60.0 + 30.0, 0).astype(np.float32)
    xyz = np.stack([(xx - r / 2) * mm_per_px, (yy - r / 2) * mm_per_px, z], -1).astype(np.float32)
    xyz[~mask] = 0
    corr = np.stack([(u + 1) / 2, (v + 1) / 2, np.sqrt(np.clip(q, 0, 1))], -1).astype(np.float32)
    corr[~mask] = 0
    shade = np.clip(0.3 + 0.7 * np.sqrt(np.clip(q, 0, 1)), 0, 1)
    color = rng.uniform(0.4, 1.0, 3)
    img = rng.uniform(0, 0.3, (r, r, 3)) * (~mask)[..., None] + shade[..., None] * color * mask[..., None]
    return {
        "image": (img * 255).astype(np.uint8),
        "xyz": xyz,
        "corr": corr,
        "mask": mask,
        "meta": {"seed": seed},
    }


class FakeFaces(Dataset):
    def __init__(self, split: str, resolution: int, length: int, offset: int = 0):
        self.base = {"train": 0, "val": 10_000_000, "test": 20_000_000}[split]
        self.resolution, self.length, self.offset = resolution, length, offset

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return sample_to_tensors(fake_sample(self.base + self.offset + i, self.resolution))


class SynthFaces(Dataset):
    """On-the-fly synthetic faces from ``training.synth.generate_sample``; item i uses the i-th seed
    (after ``offset``) of the split's seed range, wrapping around."""

    def __init__(self, split: str, resolution: int, length: int, offset: int = 0, **options):
        from . import synth

        self._synth = synth
        self.seeds = synth.seed_range(split)
        self.resolution, self.length, self.offset, self.options = resolution, length, offset, options
        self._model = None

    def __len__(self):
        return self.length

    def seed_of(self, i: int) -> int:
        seeds = self.seeds
        return int(seeds[(self.offset + i) % len(seeds)])

    def raw(self, i: int) -> dict:
        if self._model is None:
            from ..core.face_model import load_synth_face_model

            self._model = load_synth_face_model()
        return self._synth.generate_sample(
            self.seed_of(i), resolution=self.resolution, model=self._model, **self.options
        )

    def __getitem__(self, i):
        return sample_to_tensors(self.raw(i))


class ShardFaces(Dataset):
    """Samples read from ``*.npz`` shards with arrays image (N,R,R,3) uint8, xyz (N,R,R,3),
    corr (N,R,R,3), mask (N,R,R); all loaded into memory. Item i wraps around."""

    def __init__(self, pattern: str, length: int | None = None, offset: int = 0):
        files = sorted(
            glob.glob(os.path.join(pattern, "*.npz")) if os.path.isdir(pattern) else glob.glob(pattern)
        )
        if not files:
            raise FileNotFoundError(
                f"no shards match {pattern!r}; write them with "
                "`python -m pix2vertex_addon.training.synth make-dataset`"
            )
        parts = {k: [] for k in ("image", "xyz", "corr", "mask")}
        for f in files:
            with np.load(f) as z:
                for k in parts:
                    parts[k].append(z[k])
        self.arrays = {k: np.concatenate(v) for k, v in parts.items()}
        self.n = len(self.arrays["image"])
        self.length = length or self.n
        self.offset = offset

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        j = (self.offset + i) % self.n
        return sample_to_tensors({k: v[j] for k, v in self.arrays.items()})


def make_dataset(
    source: str, split: str, resolution: int, length: int, offset: int = 0, **options
) -> Dataset:
    """source: 'synth' (on the fly), 'fake' (toy ellipsoids) or a shard folder / glob."""
    if source == "fake":
        return FakeFaces(split, resolution, length, offset)
    if source == "synth":
        return SynthFaces(split, resolution, length, offset, **options)
    return ShardFaces(source, length, offset)
