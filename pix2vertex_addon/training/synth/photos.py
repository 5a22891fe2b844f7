"""Natural-image backgrounds: random crops of the sample images shipped with scikit-image (no
download), rescaled, flipped and colour-jittered.

Optional: when scikit-image is not installed, :func:`photo_sources` is empty and the generator
uses its procedural backgrounds only (matplotlib's sample data has no usable photo). Images with human faces are never used: astronaut,
camera (the cameraman) and grace_hopper are the real-photo *test* images of the project, and
lfw_subset is a face data set; :data:`EXCLUDED` names them and the allow-list below leaves them
out. Files are read directly with Pillow (``skimage.data``'s fetchers may try the network).
Decoded images are cached per process, each at most 512 px on its longer side.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

__all__ = ["EXCLUDED", "PHOTO_FILES", "photo_background", "photo_sources", "preload_photos"]

# Never used as backgrounds (stems of files in the packages' data folders): faces / test photos.
EXCLUDED = frozenset({"astronaut", "camera", "grace_hopper", "lfw_subset"})

# (package, folder inside the package, file): colour photos and grey textures without people.
PHOTO_FILES = (
    ("skimage", "data", "coffee.png"),
    ("skimage", "data", "chelsea.png"),
    ("skimage", "data", "rocket.jpg"),
    ("skimage", "data", "motorcycle_left.png"),
    ("skimage", "data", "motorcycle_right.png"),
    ("skimage", "data", "hubble_deep_field.jpg"),
    ("skimage", "data", "color.png"),
    ("skimage", "data", "retina.jpg"),
    ("skimage", "data", "ihc.png"),
    ("skimage", "data", "brick.png"),
    ("skimage", "data", "grass.png"),
    ("skimage", "data", "gravel.png"),
    ("skimage", "data", "coins.png"),
    ("skimage", "data", "moon.png"),
    ("skimage", "data", "cell.png"),
    ("skimage", "data", "clock_motion.png"),
    ("skimage", "data", "page.png"),
    ("skimage", "data", "text.png"),
)
_MAX_SIDE = 512
_lock = threading.Lock()
_sources: list[Path] | None = None
_cache: dict[Path, np.ndarray] = {}


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def photo_sources() -> list[Path]:
    """Existing files of :data:`PHOTO_FILES` in this environment (possibly empty); cached."""
    global _sources
    with _lock:
        if _sources is None:
            found = []
            for pkg, folder, name in PHOTO_FILES:
                root = _package_dir(pkg)
                if root is None or Path(name).stem in EXCLUDED:
                    continue
                p = root / folder / name
                if p.is_file():
                    found.append(p)
            _sources = found
        return list(_sources)


def _load(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB (grey files: (H, W, 1)), at most 512 px on the longer side; cached."""
    with _lock:
        a = _cache.get(path)
    if a is not None:
        return a
    im: Image.Image = Image.open(path)
    im = im.convert("L") if im.mode in ("L", "I", "I;16", "F", "1", "LA") else im.convert("RGB")
    s = _MAX_SIDE / max(im.size)
    if s < 1:
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                       Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    with _lock:
        _cache[path] = a
    return a


def preload_photos() -> int:
    """Decode every photo now (5-15 ms each, once per process) instead of at its first use, e.g.
    in a DataLoader worker's ``worker_init_fn`` or before timing the generator; returns how many."""
    srcs = photo_sources()
    for p in srcs:
        _load(p)
    return len(srcs)


def photo_background(rng: np.random.Generator, R: int) -> tuple[np.ndarray, dict] | None:
    """(R, R, 3) float32 sRGB background in [0, 1] from a random photo crop, and what was used;
    None when no photo is available.

    Crop side 25-100 % of the photo's shorter side at a random place, mirrored half the time,
    brightness/contrast/saturation/gamma jitter and per-channel gains, colour channels permuted
    15 %, grey textures tinted (duotone), defocus blur 40 %.
    """
    srcs = photo_sources()
    if not srcs:
        return None
    path = srcs[int(rng.integers(len(srcs)))]
    a = _load(path)
    H, W = a.shape[:2]
    side = min(H, W) * rng.uniform(0.25, 1.0)
    x0 = rng.uniform(0, W - side)
    y0 = rng.uniform(0, H - side)
    pil = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
    pil = pil.resize((R, R), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    blur = rng.uniform(0.5, 4.0) if rng.random() < 0.4 else 0.0
    if blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(blur * R / 256))
    if rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.arange(256, dtype=np.float64) / 255.0
    if pil.mode == "L":  # grey texture: map dark..light onto two random colours
        lo, hi = rng.random(3) * 0.5, 0.5 + rng.random(3) * 0.5
        pil = Image.merge("RGB", [pil.point(list(np.round((lo[k] + x * (hi[k] - lo[k])) * 255)
                                                   .astype(int))) for k in range(3)])
    else:
        if rng.random() < 0.15:
            bands = pil.split()
            pil = Image.merge("RGB", [bands[int(k)] for k in rng.permutation(3)])
        pil = ImageEnhance.Color(pil).enhance(rng.uniform(0.3, 1.3))
    # contrast about the mean, brightness, per-channel gains and gamma: one lookup table
    m = float(np.asarray(pil.reduce(8), dtype=np.float32).mean()) / 255.0
    contrast = rng.uniform(0.6, 1.2)
    gains = np.exp(rng.normal(0, 0.3) + rng.normal(0, 0.08, 3))
    gamma = float(np.exp(rng.normal(0, 0.2)))
    y = np.clip((m + (x - m) * contrast)[None, :] * gains[:, None], 0.0, 1.0) ** gamma
    pil = pil.point(list(np.round(y * 255).astype(int).ravel()))
    img = np.asarray(pil, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(img, dtype=np.float32), {"kind": "photo", "source": path.stem,
                                                         "blur_px": float(blur * R / 256)}
