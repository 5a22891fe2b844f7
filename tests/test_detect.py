"""Face detection on real photos (MediaPipe, offline) and the crop it produces."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core.crop import CROP_SCALE, square_window
from pix2vertex_addon.core.detect import MP_TO_IBUG68, FaceDetector, NoFaceError
from pix2vertex_addon.core.images import load_image

from photos import no_face_path, photo_paths


@pytest.fixture(scope="module")
def detector():
    d = FaceDetector()
    yield d
    d.close()


# Pupil centres read off 4x enlargements of the photos with a pixel grid (x right, y down):
# the detector's eye landmarks (mean of the 6 eyelid points) must land within a few pixels.
EYES = {
    "astronaut": ((203.0, 101.0), (246.0, 103.0)),
    "grace_hopper": ((219.0, 188.0), (304.0, 186.0)),
}


def test_mapping_table_is_well_formed():
    assert MP_TO_IBUG68.shape == (68, 2) and MP_TO_IBUG68.min() >= 0 and MP_TO_IBUG68.max() < 478


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "cameraman"])
def test_finds_the_face_in_real_photos(detector, name):
    rgb, _ = load_image(photo_paths()[name])
    faces = detector.detect(rgb)
    assert len(faces) == 1
    f = faces[0]
    assert f.landmarks_68.shape == (68, 2) and f.landmarks_478.shape == (478, 2)
    x0, y0, side = f.crop
    lo, hi = f.landmarks_68.min(0), f.landmarks_68.max(0)
    assert side == pytest.approx(CROP_SCALE * (hi - lo).max())
    assert x0 < lo[0] and x0 + side > hi[0] and y0 < lo[1] and y0 + side > hi[1]
    if name in EYES:
        right_eye = f.landmarks_68[36:42].mean(0)  # subject's right eye: image left
        left_eye = f.landmarks_68[42:48].mean(0)
        (rx, ry), (lx, ly) = EYES[name]
        assert np.hypot(*(right_eye - (rx, ry))) < 6 and np.hypot(*(left_eye - (lx, ly))) < 6, (right_eye, left_eye)


def test_no_face(detector):
    rgb, _ = load_image(no_face_path())
    with pytest.raises(NoFaceError, match="no face"):
        detector.detect(rgb)


def test_small_face_in_a_large_photo_and_several_faces(detector):
    rgb, _ = load_image(photo_paths()["astronaut"])
    big = np.full((2400, 3200, 3), 90, np.uint8)
    big[100:612, 200:712] = rgb  # a face ~90 px wide (3 % of the photo's width)
    larger = np.repeat(np.repeat(rgb, 3, axis=0), 3, axis=1)[:1200, :1200] // 2 * 2
    big[1100:2300, 1900:3100] = larger  # a second one, three times larger
    faces = detector.detect(big, all_faces=True)
    assert len(faces) == 2
    assert faces[0].size > 2 * faces[1].size  # largest first
    assert 1900 < faces[0].landmarks_68[:, 0].mean() < 3100 and 200 < faces[1].landmarks_68[:, 0].mean() < 712
    assert len(detector.detect(big)) == 1


def test_face_cut_by_the_border(detector):
    rgb, _ = load_image(photo_paths()["grace_hopper"])
    cut = np.ascontiguousarray(rgb[:, 150:])  # the left part of the face is gone
    f = detector.detect(cut)[0]
    assert f.crop[0] < 0, "the crop extends past the border"
    win, *_ = square_window(cut, f.crop[0] + f.crop[2] / 2, f.crop[1] + f.crop[2] / 2, f.crop[2], 128)
    assert win.shape == (128, 128, 3)


def test_rejects_wrong_arrays(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))


@pytest.mark.slow
def test_12000_by_9000_photo(detector, tmp_path):
    from PIL import Image

    rgb, _ = load_image(photo_paths()["astronaut"])
    big = np.full((9000, 12000, 3), 128, np.uint8)
    face = np.asarray(Image.fromarray(rgb).resize((2048, 2048)))
    big[3000:5048, 7000:9048] = face
    Image.fromarray(big).save(tmp_path / "huge.jpg", quality=85)
    del big
    photo, info = load_image(tmp_path / "huge.jpg")
    assert photo.shape == (9000, 12000, 3)
    f = detector.detect(photo)[0]
    cx = f.landmarks_68[:, 0].mean()
    assert 7000 < cx < 9048 and f.size > 300  # the face is ~360 px across


def test_mediapipe_imports_without_its_drawing_helpers():
    """The detector's import of MediaPipe leaves matplotlib (its drawing helpers' import, seconds
    of a cold start) unimported, and the helpers still work for whoever uses them."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
sys.path.insert(0, sys.argv[1])
from pix2vertex_addon.core.detect import FaceDetector, import_mediapipe
import skimage.data
mp = import_mediapipe()
faces = FaceDetector().detect(skimage.data.astronaut())
print("before", "matplotlib" in sys.modules, len(faces))
import mediapipe
assert mediapipe is mp
from mediapipe.python.solutions.drawing_utils import DrawingSpec
style = mediapipe.solutions.drawing_styles.get_default_face_mesh_contours_style()
print("after", "matplotlib" in sys.modules, type(DrawingSpec).__name__, len(style) > 0)
"""
    r = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[1])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("before", "after"))]
    assert lines == ["before False 1", "after True type True"]
