"""Synthetic datasets: on-the-fly generation for DataLoader workers, and npz shards on disk.

No ``bpy``. torch is imported here (the datasets are torch datasets); the face model is loaded
lazily in each process (worker) from a path, never pickled.

Shard layout (``make_dataset``): ``DIR/index.json`` and ``DIR/<split>-<first seed>-<n>.npz``,
each npz holding ``n`` samples stacked along the first axis:

======================  =========================  ===============================================
key                     shape, dtype               meaning
======================  =========================  ===============================================
image                   (n, R, R, 3) uint8         RGB
xyz                     (n, R, R, 3) float16/32    label frame, mm, 0 outside mask
corr                    (n, R, R, 3) float16/32    canonical correspondence, 0 outside mask
mask                    (n, R, R) bool             face region visible, not occluded
seed, identity_id       (n,) int64
landmarks_2d            (n, 68, 2) float32         pixels (centres at integer + 0.5)
focal_px, z_ref_mm      (n,) float32
rotation                (n, 3, 3) float32          model (cm->mm scaled) to camera rotation
translation_mm          (n, 3) float32
pose_deg                (n, 3) float32             yaw, pitch, roll
identity, expression    (n, 100), (n, 53) float32  face model weights
======================  =========================  ===============================================

``index.json`` names the parameters and the finished shards; a run with the same parameters
skips finished shards (resumable), every file is written to a temporary name then renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...core.atomic import atomic_file, write_json_atomic
from ...core.face_model import load_synth_face_model
from .generator import generate_sample
from .sampling import seed_range

__all__ = ["ShardDataset", "SynthDataset", "make_dataset", "sample_to_tensors", "stack_samples"]

INDEX_VERSION = 1


def sample_to_tensors(s: dict) -> dict:
    """Training tensors of a sample: image (3, R, R) float32 in [0, 1], xyz (3, R, R) mm,
    corr (3, R, R), mask (1, R, R) float32 {0, 1}, seed () int64."""
    return {
        "image": torch.from_numpy(np.ascontiguousarray(s["image"].transpose(2, 0, 1))).float() / 255.0,
        "xyz": torch.from_numpy(np.ascontiguousarray(s["xyz"].transpose(2, 0, 1), dtype=np.float32)),
        "corr": torch.from_numpy(np.ascontiguousarray(s["corr"].transpose(2, 0, 1), dtype=np.float32)),
        "mask": torch.from_numpy(np.ascontiguousarray(s["mask"][None], dtype=np.float32)),
        "seed": torch.tensor(int(s["seed"]), dtype=torch.int64),
    }


class SynthDataset(Dataset):
    """Samples generated on the fly: item ``i`` is the sample of seed
    ``seed_range(split).start + seed_offset + epoch * length + i``.

    Picklable (holds only parameters); the face model is loaded lazily in each worker.
    Call :meth:`set_epoch` between epochs for fresh samples (with non-persistent workers).

    Parameters
    ----------
    split : "train" | "val" | "test"
    resolution : int, image side.
    length : int, number of items.
    seed_offset : int, first seed relative to the split's range.
    model_path : optional face model path (default: :func:`load_face_model`'s resolution).
    options : dict of keyword options for :func:`generate_sample` (e.g. ``{"clean": True}``).
    """

    def __init__(self, split: str, resolution: int = 256, length: int = 10000, seed_offset: int = 0,
                 model_path: str | None = None, options: dict | None = None):
        self.split = split
        self.resolution = int(resolution)
        self.length = int(length)
        self.seed_offset = int(seed_offset)
        self.model_path = model_path
        self.options = dict(options or {})
        self.epoch = 0
        self._range = seed_range(split)
        if self.seed_offset < 0 or self.seed_offset + self.length > len(self._range):
            raise ValueError(f"seed_offset + length exceeds the {split} range ({len(self._range)} seeds)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def seed_of(self, i: int) -> int:
        off = self.seed_offset + (self.epoch * self.length + i) % (len(self._range) - self.seed_offset)
        return self._range.start + off

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        model = load_synth_face_model(self.model_path)  # cached per process
        s = generate_sample(self.seed_of(i), self.resolution, model=model, **self.options)
        return sample_to_tensors({**s, "seed": s["meta"]["seed"]})


class ShardDataset(Dataset):
    """Samples read from shards written by :func:`make_dataset` (same tensors as SynthDataset)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        idx_path = self.dir / "index.json"
        if not idx_path.exists():
            raise FileNotFoundError(f"{idx_path} not found; write shards with "
                                    "`python -m pix2vertex_addon.training.synth make-dataset`")
        self.index = json.loads(idx_path.read_text())
        self.shards = sorted(self.index["shards"], key=lambda s: s["first_seed"])
        self.offsets = np.cumsum([0] + [s["count"] for s in self.shards])
        self._cache: tuple[int, dict] | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_cache"] = None
        return d

    def _shard(self, k: int) -> dict:
        if self._cache is None or self._cache[0] != k:
            with np.load(self.dir / self.shards[k]["file"]) as z:
                self._cache = (k, {key: z[key] for key in ("image", "xyz", "corr", "mask", "seed")})
        return self._cache[1]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        d = self._shard(k)
        j = i - int(self.offsets[k])
        return sample_to_tensors({key: d[key][j] for key in d})


def stack_samples(samples: list[dict], dtype=np.float16) -> dict[str, np.ndarray]:
    """Arrays of a shard from generated samples (see the module docstring)."""
    m = [s["meta"] for s in samples]
    return {
        "image": np.stack([s["image"] for s in samples]),
        "xyz": np.stack([s["xyz"] for s in samples]).astype(dtype),
        "corr": np.stack([s["corr"] for s in samples]).astype(dtype),
        "mask": np.stack([s["mask"] for s in samples]),
        "seed": np.array([x["seed"] for x in m], dtype=np.int64),
        "identity_id": np.array([x["identity_id"] for x in m], dtype=np.int64),
        "landmarks_2d": np.stack([s["landmarks_2d"] for s in samples]).astype(np.float32),
        "focal_px": np.array([x["focal_px"] for x in m], dtype=np.float32),
        "z_ref_mm": np.array([x["z_ref_mm"] for x in m], dtype=np.float32),
        "rotation": np.stack([x["rotation"] for x in m]).astype(np.float32),
        "translation_mm": np.stack([x["translation_mm"] for x in m]).astype(np.float32),
        "pose_deg": np.array([[x["yaw_deg"], x["pitch_deg"], x["roll_deg"]] for x in m], dtype=np.float32),
        "identity": np.stack([x["identity"] for x in m]).astype(np.float32),
        "expression": np.stack([x["expression"] for x in m]).astype(np.float32),
    }


_worker_state: dict = {}


def _worker_init(model_path, resolution, options, pool_worker=True):
    if pool_worker:
        torch.set_num_threads(1)
    _worker_state.update(model=load_synth_face_model(model_path), resolution=resolution, options=options)


def _worker_generate(seed: int) -> dict:
    st = _worker_state
    return generate_sample(seed, st["resolution"], model=st["model"], **st["options"])


def make_dataset(out: str | os.PathLike, count: int, resolution: int = 256, seed: int = 0,
                 split: str = "train", shard_size: int = 256, workers: int = 1,
                 dtype: str = "float16", compress: bool = True, model_path: str | None = None,
                 options: dict | None = None, progress: bool = True) -> Path:
    """Write ``count`` samples of ``split`` (seeds ``seed_range(split).start + seed + i``) as
    shards under ``out``; resumable. Returns the index path.
    """
    from tqdm import tqdm

    rng_split = seed_range(split)
    if seed < 0 or seed + count > len(rng_split):
        raise ValueError(f"--seed {seed} + --count {count} exceeds the {split} range of {len(rng_split)} seeds")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = {"version": INDEX_VERSION, "split": split, "resolution": int(resolution),
              "seed_offset": int(seed), "count": int(count), "shard_size": int(shard_size),
              "dtype": dtype, "options": dict(options or {})}
    idx_path = out / "index.json"
    index: dict[str, Any] = {**params, "shards": []}
    if idx_path.exists():
        old = json.loads(idx_path.read_text())
        if {k: old.get(k) for k in params} != params:
            raise ValueError(f"{idx_path} was written with other parameters "
                             f"({ {k: old.get(k) for k in params} }); use another --out or the same "
                             "parameters to resume")
        index["shards"] = [s for s in old["shards"] if (out / s["file"]).exists()]
    done = {s["first_seed"] for s in index["shards"]}
    first = rng_split.start + seed
    todo = []
    for k in range(0, count, shard_size):
        n = min(shard_size, count - k)
        if first + k not in done:
            todo.append((first + k, n))
    bar = tqdm(total=count, initial=count - sum(n for _, n in todo), unit="sample",
               disable=not progress, desc=f"synth {split} {resolution}px")
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init,
                                            initargs=(model_path, resolution, params["options"]))
    else:
        _worker_init(model_path, resolution, params["options"], pool_worker=False)
    try:
        for s0, n in todo:
            seeds = list(range(s0, s0 + n))
            samples = []
            it = pool.imap(_worker_generate, seeds, chunksize=4) if pool else map(_worker_generate, seeds)
            for smp in it:
                samples.append(smp)
                bar.update(1)
            arrays = stack_samples(samples, np.float16 if dtype == "float16" else np.float32)
            name = f"{split}-{s0:010d}-{n:05d}.npz"
            # keep_suffix=False: readers globbing *.npz never see a shard being written
            with atomic_file(out / name, keep_suffix=False) as tmp, open(tmp, "wb") as fh:
                (np.savez_compressed if compress else np.savez)(fh, **arrays)
            index["shards"].append({"file": name, "first_seed": s0, "count": n})
            index["shards"].sort(key=lambda s: s["first_seed"])
            write_json_atomic(idx_path, index, indent=1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    write_json_atomic(idx_path, index, indent=1)
    return idx_path
