"""Contact sheet: the 68 landmarks of the fitted template on real photos, before and after.

    .venv/bin/python scripts/landmark_contact_sheet.py [--out docs/reference/landmarks_real_photos.png]

Per real photo (those of ``tests/photos.py``, shipped in our dependencies) one row, zoomed to the
face: MediaPipe's own 478 -> 68 points (blue); the 68 landmarks of the template fitted
dense-only with the jaw points on the fitted mesh's occluding contour alone ("before", red);
fitted with the landmark terms, the jaw points kept on the networks' face mask (``visible_jaw``:
what ``landmarks.json`` holds; "after", green). These photos have no human annotations here, so
the sheet is for looking, not a measurement.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

CELL = 320


def draw(photo: np.ndarray, box, pts: np.ndarray, colour, title: str):
    from PIL import Image, ImageDraw

    x0, y0, side = box
    s = CELL / side
    img = Image.fromarray(photo).crop((int(x0), int(y0), int(x0 + side), int(y0 + side))).resize((CELL, CELL))
    d = ImageDraw.Draw(img)
    p = (pts - (int(x0), int(y0))) * s
    for x, y in p:
        d.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour, outline=(0, 0, 0))
    d.rectangle([0, 0, CELL, 16], fill=(0, 0, 0))
    d.text((4, 2), title, fill=(255, 255, 255))
    return np.asarray(img.convert("RGB"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "reference" / "landmarks_real_photos.png")
    a = ap.parse_args(argv)
    from pix2vertex_addon.core.images import load_image, save_png_atomic
    from pix2vertex_addon.core.landmarks import photo_landmarks_68
    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions

    from photos import photo_paths

    pipe = Pipeline()
    template = pipe.model.template
    rows = []
    for name, path in photo_paths().items():
        rgb, _ = load_image(path)
        face = pipe.detector.detect(rgb)[0]
        x0, y0, side = face.crop
        box = (x0 + 0.1 * side, y0 + 0.1 * side, 0.8 * side)
        cells = [draw(rgb, box, face.landmarks_68, (60, 140, 255), f"{name}: MediaPipe 478 -> 68")]
        for guided, colour, label in ((False, (255, 60, 60), "before: dense-only fit, outline jaw"),
                                      (True, (60, 220, 60), "after: guided fit, visible jaw")):
            rec = pipe.reconstruct_face(rgb, face, PipelineOptions(detail=False, landmarks=guided),
                                        lambda f, s: None, None)
            # before: the paper's fit with the jaw on the fitted outline alone; after: what
            # landmarks.json holds (the guided fit, the jaw kept on the networks' face mask)
            lm = photo_landmarks_68(rec.camera, rec.vertices, template, mask=rec.maps["mask"] if guided else None)
            cells.append(draw(rgb, box, lm, colour, label))
            print(f"{name} {label}: mean distance to MediaPipe's 68 points "
                  f"{np.linalg.norm(lm - face.landmarks_68, axis=1).mean() / side * 100:.2f} % of the crop side")
        rows.append(np.concatenate(cells, axis=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_png_atomic(a.out, np.concatenate(rows, axis=0))
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
