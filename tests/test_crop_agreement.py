"""The photo pipeline crops faces the way the synthetic data frames them: MediaPipe, run on
rendered faces, must give the crop that the renderer's true landmarks give (docs/reference/conventions.md)."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core.crop import crop_box_from_landmarks
from pix2vertex_addon.core.detect import FaceDetector


def test_detector_crop_matches_the_training_crop():
    from pix2vertex_addon.training.synth import generate_sample

    det = FaceDetector(min_score=0.3)
    ratios, offsets = [], []
    for seed in range(8):
        s = generate_sample(1000 + seed, 256, clean=True)
        canvas = np.full((512, 512, 3), 110, np.uint8)  # some context around the rendered crop
        canvas[128:384, 128:384] = s["image"]
        x0, y0, side = det.detect(canvas)[0].crop
        gx0, gy0, gside = crop_box_from_landmarks(s["landmarks_2d"])
        ratios.append(side / gside)
        offsets.append(((x0 + side / 2 - 128) - (gx0 + gside / 2), (y0 + side / 2 - 128) - (gy0 + gside / 2)))
        offsets[-1] = (offsets[-1][0] / gside, offsets[-1][1] / gside)
    det.close()
    ratios, offsets = np.array(ratios), np.array(offsets)
    # measured on 30 faces: scale 0.999 +- 0.048, centre offset (0.000, -0.008) +- 0.017 of the side
    assert ratios.mean() == pytest.approx(1.0, abs=0.05)
    assert np.abs(offsets.mean(axis=0)).max() < 0.03
    assert ratios.std() < 0.1 and offsets.std(axis=0).max() < 0.05
