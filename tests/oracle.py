"""An exact "oracle" stand-in for the detector and the networks, built from a synthetic sample.

With it the whole pipeline (registration, detail, camera, files, Blender operators) runs on a
rendered face whose true maps and vertices are known, independently of how well the trained
networks do. Tests of the networks themselves use the real weights.

``package`` names the add-on package to build it from: ``pix2vertex_addon`` for core tests, the
enabled extension's ``bl_ext.user_default.pix2vertex.pix2vertex_addon`` inside Blender (the same
code imported under another name has its own classes, e.g. its own ``Cancelled``).
"""

from __future__ import annotations

import importlib

import numpy as np


class OracleDetector:
    def __init__(self, sample, detect_module):
        self.lm = np.asarray(sample["landmarks_2d"], dtype=np.float64)
        self.r = sample["image"].shape[0]
        self.m = detect_module

    def detect(self, rgb, all_faces=False):
        if rgb.shape[0] != self.r or rgb.std() < 1:
            raise self.m.NoFaceError("no face found in the image (oracle: not the sample)")
        return [self.m.DetectedFace(box=np.r_[self.lm.min(0), self.lm.max(0)], score=1.0, landmarks_478=self.lm,
                                    landmarks_68=self.lm, crop=(0.0, 0.0, float(self.r)))]

    def load(self):
        pass

    def close(self):
        pass


class OraclePredictor:
    def __init__(self, sample):
        self.sample = sample
        self.resolution = sample["image"].shape[0]

    def predict(self, crop):
        s = self.sample
        return {"xyz": s["xyz"].copy(), "mask": s["mask"].astype(np.float32), "corr": s["corr"].copy()}


def oracle_pipeline(sample, model=None, package: str = "pix2vertex_addon"):
    pipeline = importlib.import_module(f"{package}.core.pipeline")
    detect = importlib.import_module(f"{package}.core.detect")
    return pipeline.Pipeline(model, detector=OracleDetector(sample, detect), predictor=OraclePredictor(sample))
