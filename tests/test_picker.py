"""Several faces in one photo: the numbered overlay and reconstructing the chosen face."""

from __future__ import annotations

import numpy as np
import pytest

from pix2vertex_addon.core.detect import DetectedFace
from pix2vertex_addon.core.picker import OTHER, SELECTED, face_boxes_overlay
from pix2vertex_addon.core.pipeline import ReconstructionError


def _face(x0, y0, x1, y1):
    lm = np.array([[x0, y0], [x1, y1]], dtype=float)
    return DetectedFace(box=np.array([x0, y0, x1, y1], float), score=0.9, landmarks_478=lm, landmarks_68=lm,
                        crop=(x0, y0, x1 - x0))


def test_overlay_draws_every_box_and_marks_the_chosen_one():
    rgb = np.full((300, 600, 3), 90, np.uint8)
    faces = [_face(50, 50, 250, 250), _face(380, 100, 500, 220)]
    out = face_boxes_overlay(rgb, faces, selected=1, max_side=600)
    assert out.shape == rgb.shape
    # box edges (a little inside the drawn outline): the chosen one yellow, the other white
    assert tuple(out[150, 381]) == SELECTED and tuple(out[150, 51]) == OTHER
    assert (out[150, 300] == 90).all(), "between the boxes the photo is untouched"
    small = face_boxes_overlay(rgb, faces, selected=0, max_side=300)
    assert small.shape == (150, 300, 3)


class _StubDetector:
    def __init__(self, faces):
        self.faces = faces

    def detect(self, rgb, all_faces=False):
        return self.faces if all_faces else self.faces[:1]


def test_reconstruct_the_chosen_face():
    from types import SimpleNamespace

    from pix2vertex_addon.core.pipeline import Pipeline, PipelineOptions

    faces = [_face(0, 0, 200, 200), _face(300, 0, 400, 100)]
    pipe = Pipeline.__new__(Pipeline)  # the real reconstruct() with a stub detector and stages
    pipe.detector = _StubDetector(faces)
    pipe.reconstruct_face = lambda rgb, face, opts, progress, cancel: SimpleNamespace(
        seconds={}, face=face, warnings=[])
    rgb = np.zeros((200, 400, 3), np.uint8)
    assert [r.face for r in pipe.reconstruct(rgb, PipelineOptions(face_index=1))] == [faces[1]]
    assert [r.face for r in pipe.reconstruct(rgb, PipelineOptions())] == [faces[0]]
    assert [r.face for r in pipe.reconstruct(rgb, PipelineOptions(all_faces=True))] == faces
    with pytest.raises(ReconstructionError, match="has 2 faces"):
        pipe.reconstruct(rgb, PipelineOptions(face_index=2))


def test_two_real_faces_are_both_found_largest_first():
    from PIL import Image

    from pix2vertex_addon.core.detect import FaceDetector
    from pix2vertex_addon.core.images import load_image

    from photos import photo_paths

    a, _ = load_image(photo_paths()["astronaut"])
    b, _ = load_image(photo_paths()["grace_hopper"])
    b = np.asarray(Image.fromarray(b).resize((int(b.shape[1] * 300 / b.shape[0]), 300)))
    canvas = np.full((512, a.shape[1] + b.shape[1], 3), 128, np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[100:400, a.shape[1]:] = b
    det = FaceDetector()
    try:
        faces = det.detect(canvas, all_faces=True)
    finally:
        det.close()
    assert len(faces) == 2
    assert faces[0].size >= faces[1].size
    assert sorted(f.box[0] > a.shape[1] - 10 for f in faces) == [False, True], "one face in each photo"
