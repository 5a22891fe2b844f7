"""Run the networks on real photos and save a contact sheet: input crop, depth, normals,
correspondence and mask, one row per photo.

    python -m pix2vertex_addon.training.contact_sheet --weights pix2vertex_addon/weights \
        --out docs/real_photos_networks.png PHOTO[#x0,y0,x1,y1] ...

``PHOTO`` is an image file (or ``FILE.npy#i`` for image ``i`` of a (N, H, W[, 3]) array in
[0, 1]); ``#x0,y0,x1,y1`` is the extent of the face's landmarks (eyebrows to chin, jaw side to
side) in pixels, from which the crop follows the convention of core/crop.py. Without it the
whole image is taken as the crop (it should then already be framed that way).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.atomic import atomic_file
from ..core.viz import colormap, normals_rgb, tile


def load_crop(spec: str, resolution: int) -> tuple[np.ndarray, str]:
    from ..core.crop import crop_box_from_landmarks

    path, _, box = spec.partition("#")
    label = Path(path).name
    if path.endswith(".npy"):
        arr = np.load(path)
        i = int(box or 0)
        im = arr[i]
        im = np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im
        img = Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8))
        label += f"[{i}]"
        box = ""
    else:
        img = Image.open(path).convert("RGB")
    if box:
        x0, y0, x1, y1 = (float(v) for v in box.split(","))
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        cx, cy, side = crop_box_from_landmarks(pts)
        img = img.crop((round(cx), round(cy), round(cx + side), round(cy + side)))
    elif img.size[0] != img.size[1]:
        s = min(img.size)
        img = img.crop(
            ((img.size[0] - s) // 2, (img.size[1] - s) // 2, (img.size[0] + s) // 2, (img.size[1] + s) // 2)
        )
    return np.asarray(img.resize((resolution, resolution), Image.BICUBIC)), label


def make_sheet(predictor, specs: list[str], cell: int = 192) -> Image.Image:
    rows = []
    for spec in specs:
        crop, _ = load_crop(spec, predictor.resolution)
        p = predictor.predict(crop)
        m = p["mask"] >= 0.5
        z = p["xyz"][..., 2]
        lo, hi = (np.percentile(z[m], 1), np.percentile(z[m], 99)) if m.any() else (0, 1)
        overlay = (crop * 0.5 + np.stack([m * 0, m * 255, m * 0], -1) * 0.5).astype(np.uint8)
        rows.append(
            [
                crop,
                colormap(-z, -hi, -lo, m),
                normals_rgb(p["xyz"], m),
                (np.clip(p["corr"], 0, 1) * 255).astype(np.uint8),
                overlay,
            ]
        )
    return tile(rows, ["input crop", "depth (near=bright)", "normals", "correspondence", "mask"], cell)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="+")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    from ..core.predict import Predictor

    sheet = make_sheet(Predictor(a.weights, a.threads), a.photos)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(a.out) as tmp:
        sheet.save(tmp)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
