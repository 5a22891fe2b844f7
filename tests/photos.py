"""Real photos that ship in packages the project depends on (test inputs, never committed)."""

from __future__ import annotations

from pathlib import Path


def photo_paths() -> dict[str, Path]:
    import matplotlib.cbook
    import skimage

    return {
        "astronaut": Path(skimage.data_dir) / "astronaut.png",  # Eileen Collins, NASA (public domain)
        "grace_hopper": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        "cameraman": Path(skimage.data_dir) / "camera.png",  # greyscale, small face in profile-ish view
    }


def no_face_path() -> Path:
    import skimage

    return Path(skimage.data_dir) / "coffee.png"
