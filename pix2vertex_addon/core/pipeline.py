"""Photo to registered, detailed face mesh: the whole method in one object (no ``bpy``).

    pipeline = Pipeline()                        # loads the face model, networks, detector once
    faces = pipeline.reconstruct(rgb)            # list of FaceReconstruction, largest face first
    write_result(out_dir, rgb, faces[0], ...)    # core/results.py

Stages per face: crop -> networks -> target mesh -> affine RANSAC -> non-rigid registration ->
fine detail -> camera and head pose. Each stage is timed; ``progress(fraction, stage)`` is called
between stages and ``cancel()`` (a callable or a ``threading.Event``) is checked there, raising
:class:`Cancelled`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .camera import CropCamera, fit_pinhole, rigid_fit
from .correspondence import canonical_coordinates, corr_to_mm_scale
from .crop import square_window
from .detect import DetectedFace, FaceDetector, NoFaceError
from .face_model import FaceModel, load_face_model
from .geometry import DetailResult, RegistrationParams, RegistrationResult, TargetMesh

__all__ = ["Cancelled", "FaceReconstruction", "Pipeline", "PipelineOptions"]

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool] | threading.Event | None

STAGES = ("detect", "crop", "networks", "target_mesh", "affine", "registration", "detail", "camera")


class Cancelled(Exception):
    """The caller's cancel flag was set; nothing was written."""


class ReconstructionError(ValueError):
    """The photo's face could not be reconstructed (the message says why)."""


@dataclass
class PipelineOptions:
    """Per-call options (plain data, so that operators and the CLI can pass them through).

    ``landmarks``: fit with the detector's 478 face-mesh points (``core/landmarks.py``) beside the
    dense maps; False is the paper's dense-only fit. ``registration``: a ``RegistrationParams``
    replacing the default of that choice (``LANDMARK_PARAMS`` or ``RegistrationParams()``).
    ``head``: the writers (``batch.reconstruct_photo``) also build the full head with eyes and
    teeth (``core/head.py``) and write its files into the same result folder; ``arkit``: with
    the ARKit shape keys. ``face_index``: reconstruct that face of the photo (0: the largest; the
    order of ``FaceDetector.detect`` with ``all_faces``) instead of the largest.
    """

    all_faces: bool = False
    detail: bool = True
    detail_levels: int = 1
    detail_gain_mm: float = 5.0
    ransac_iterations: int = 1000
    seed: int = 0
    landmarks: bool = True
    registration: RegistrationParams | None = None
    head: bool = False
    arkit: bool = True
    face_index: int = 0


@dataclass
class FaceReconstruction:
    """One reconstructed face.

    Attributes (units: mm unless said; "label frame": docs/reference/conventions.md)
    ----------
    face : DetectedFace (photo pixels).
    crop : (R, R, 3) uint8, the network input.
    maps : dict xyz (R, R, 3) mm, mask (R, R) float probability, corr (R, R, 3).
    camera : CropCamera (focal, z_ref, crop box in the photo).
    target : TargetMesh (label frame).
    affine : (3, 4) template (model frame, mm) -> label frame.
    vertices : (V, 3) registered template, label frame (template vertex order).
    pose : (R (3, 3), t (3,)) with ``vertices ~ R @ model_mm + t``.
    vertices_model : (V, 3) registered template with the head pose removed, model frame
        (+x face-left, +y up, +z out of the face), mm.
    detail : DetailResult or None (label frame; ``detail.displacement`` mm along normals).
    detail_levels : Simple subdivision levels of ``detail``.
    seconds : {stage: seconds}.  warnings : list of str.
    """

    face: DetectedFace
    crop: np.ndarray
    maps: dict
    camera: CropCamera
    target: TargetMesh
    affine: np.ndarray
    vertices: np.ndarray
    pose: tuple[np.ndarray, np.ndarray]
    vertices_model: np.ndarray
    detail: DetailResult | None
    registration: RegistrationResult
    detail_levels: int = 1
    seconds: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def to_model(self, points_label: np.ndarray) -> np.ndarray:
        """Label-frame points (N, 3) -> model frame with the head pose removed (mm)."""
        r, t = self.pose
        return (np.asarray(points_label) - t) @ r


def _cancelled(cancel: CancelFn) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class Pipeline:
    """Loads the face model, the networks and the detector once; reconstructs many photos.

    Parameters
    ----------
    face_model : path or FaceModel, optional (default: ``P2V_FACE_MODEL`` / shared default).
    weights_dir : folder of the network weights (default: the shipped ones).
    threads : torch and solver threads.
    detector, predictor : replacements for the MediaPipe detector and the networks (anything with
        ``detect(rgb, all_faces)`` / ``resolution`` and ``predict(crop)``), e.g. in tests.
    """

    def __init__(self, face_model: str | FaceModel | None = None, weights_dir=None, threads: int = 2,
                 detector: FaceDetector | None = None, predictor=None):
        from .predict import get_predictor

        self.model = face_model if isinstance(face_model, FaceModel) else load_face_model(face_model)
        self.predictor = predictor if predictor is not None else get_predictor(weights_dir, threads)
        self.detector = detector or FaceDetector()
        t = self.model.template
        self.template_mm = t.vertices_cm * 10.0
        self.canon = canonical_coordinates(self.model).astype(np.float64)
        self.corr_scale = corr_to_mm_scale(self.model)
        self.faces = np.asarray(t.faces)
        self.triangles = t.triangles()
        from .geometry import feature_damping, polygon_edges

        self.edges = polygon_edges(self.faces)
        self.damping = feature_damping(self.template_mm, t.landmarks_68)
        self._lock = threading.Lock()

    @property
    def resolution(self) -> int:
        return int(self.predictor.resolution)

    def warm_up(self, options: PipelineOptions | None = None, texture_size: int = 1024,
                detail_texture_sizes: tuple[int, ...] = ()) -> None:
        """Do now what the first reconstruction with ``options`` would do once: load the
        detector's models (and run them and the networks once, on blank images) and compute the
        UV-layout tables of the texture bake, its mirror look-up, the detail's normal map and the
        detail images of ``detail_texture_sizes`` (Blender's displacement image). Then the first
        photo runs like the next ones. Safe in a worker thread; a second call costs little."""
        from .blas import shared_cores

        with shared_cores():  # a Reconstruct may start beside it: half the cores each
            self._warm_up(options or PipelineOptions(), texture_size, detail_texture_sizes)

    def _warm_up(self, opts: PipelineOptions, texture_size: int, detail_texture_sizes: tuple[int, ...]) -> None:
        self.detector.load()
        # first runs allocate: MediaPipe's graphs and onnxruntime's buffers
        try:
            self.detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        except NoFaceError:
            pass
        r = getattr(self.predictor, "resolution", None)
        if isinstance(r, int):
            self.predictor.predict(np.zeros((r, r, 3), dtype=np.uint8))
        from .geometry import detail_field
        from .results import prepare_layouts

        detail = None
        if opts.detail:  # the subdivided mesh the detail step makes (its quads), on a flat field
            detail = detail_field(self.template_mm, self.faces, intensity=lambda p: np.zeros(len(p)),
                                  levels=opts.detail_levels, damping=self.damping, edges=self.edges)
        prepare_layouts(self.model.template, detail, opts.detail_levels, texture_size, detail_texture_sizes)

    def reconstruct(self, rgb: np.ndarray, options: PipelineOptions | None = None,
                    progress: ProgressFn | None = None, cancel: CancelFn = None) -> list[FaceReconstruction]:
        """Reconstruct the largest face of ``rgb`` ((H, W, 3) uint8), face ``options.face_index``,
        or every face with ``options.all_faces``. Raises NoFaceError, ReconstructionError or
        Cancelled."""
        opts = options or PipelineOptions()
        report = progress or (lambda f, s: None)
        report(0.0, "detect")
        t0 = time.perf_counter()
        every = opts.all_faces or opts.face_index > 0
        with_notes = getattr(self.detector, "detect_with_notes", None)
        faces, notes = (with_notes(rgb, all_faces=every) if with_notes is not None
                        else (self.detector.detect(rgb, all_faces=every), []))
        if opts.face_index > 0 and not opts.all_faces:
            n = len(faces)
            if opts.face_index >= n:
                raise ReconstructionError(f"face {opts.face_index} was chosen but the photo has {n} "
                                          f"face{'s' if n != 1 else ''} (0 to {n - 1})")
            faces = [faces[opts.face_index]]
        t_detect = time.perf_counter() - t0
        out = []
        for i, face in enumerate(faces):
            def sub(frac: float, stage: str, i: int = i) -> None:
                report((i + frac) / len(faces), stage)

            try:
                rec = self.reconstruct_face(rgb, face, opts, sub, cancel)
            except ReconstructionError as exc:
                if len(faces) == 1:
                    raise
                notes.append(f"face {i + 1} of {len(faces)} was not reconstructed: {exc}")
                continue
            rec.seconds = {"detect": t_detect / len(faces), **rec.seconds}
            out.append(rec)
        if not out:
            raise ReconstructionError("; ".join(notes))
        out[0].warnings[:0] = notes  # every face found is either reconstructed or named here
        report(1.0, "done")
        return out

    def reconstruct_face(self, rgb: np.ndarray, face: DetectedFace, opts: PipelineOptions,
                         progress: ProgressFn, cancel: CancelFn) -> FaceReconstruction:
        from .geometry import (
            LANDMARK_PARAMS,
            apply_affine,
            build_target_mesh,
            detail_field,
            fit_affine_ransac,
            register,
        )
        from .landmarks import affine_pairs, landmark_term

        seconds: dict[str, float] = {}
        warnings: list[str] = []
        clock = [time.perf_counter()]
        n_stages = len(STAGES) - 1

        def stage_done(name: str, k: int) -> None:
            now = time.perf_counter()
            seconds[name] = now - clock[0]
            clock[0] = now
            if _cancelled(cancel):
                raise Cancelled(f"cancelled after {name}")
            progress(k / n_stages, STAGES[min(k + 1, n_stages)])

        r = self.resolution
        x0, y0, side = face.crop
        crop, _, _, _ = square_window(rgb, x0 + side / 2, y0 + side / 2, side, r)
        h, w = rgb.shape[:2]
        if x0 < 0 or y0 < 0 or x0 + side > w or y0 + side > h:
            warnings.append("the face crop extends past the image border (border pixels repeated)")
        stage_done("crop", 1)

        with self._lock:
            maps = self.predictor.predict(crop)
        stage_done("networks", 2)

        mask = maps["mask"] >= 0.5
        if mask.sum() < 0.02 * r * r:
            raise ReconstructionError(
                f"the networks found almost no face in the crop ({int(mask.sum())} pixels); "
                "is the face visible and well lit?")
        target = build_target_mesh(maps["xyz"], mask, maps["corr"], image=crop)
        stage_done("target_mesh", 3)

        focal, z_ref, rms = fit_pinhole(maps["xyz"], mask)
        camera = CropCamera(focal=focal, z_ref=z_ref, resolution=r, box=(x0, y0, side))
        term = (landmark_term(face.landmarks_478, face.crop, r, focal, z_ref, self.triangles, len(self.template_mm),
                              depth_478=face.depth_478, xyz=maps["xyz"], mask=mask)
                if opts.landmarks else None)
        params = opts.registration or (LANDMARK_PARAMS if term is not None else RegistrationParams())
        extra = (affine_pairs(term, self.template_mm, maps["xyz"], mask, params.w_landmark_affine)
                 if term is not None else None)
        affine, _, info = fit_affine_ransac(self.template_mm, self.canon, target,
                                            iterations=opts.ransac_iterations, seed=opts.seed,
                                            corr_scale_mm=self.corr_scale, extra=extra)
        if info["n_inliers"] < 50:
            warnings.append(f"only {info['n_inliers']} affine inliers: the correspondence map is poor")
        if term is not None and params.w_landmark_camera > 0:  # the camera from the landmarks too
            points = term.B @ apply_affine(affine, self.template_mm)
            focal, z_ref, rms = fit_pinhole(maps["xyz"], mask, extra=(points, term.target_px, term.weights),
                                            extra_share=params.w_landmark_camera)
            camera = CropCamera(focal=focal, z_ref=z_ref, resolution=r, box=(x0, y0, side))
            term = dataclasses.replace(term, focal=focal, z_ref=z_ref)
        stage_done("affine", 4)

        reg = register(apply_affine(affine, self.template_mm), self.faces, self.canon, target,
                       params=params, corr_scale_mm=self.corr_scale, landmarks=term)
        stage_done("registration", 5)

        detail = None
        if opts.detail:
            detail = detail_field(reg.vertices, self.faces, target, levels=opts.detail_levels,
                                  gain_mm=opts.detail_gain_mm, damping=self.damping, edges=self.edges)
        stage_done("detail", 6)

        if rms > 2.0:
            warnings.append(f"the predicted geometry fits a pinhole camera poorly (rms {rms:.1f} px)")
        rot, t = rigid_fit(self.template_mm, reg.vertices)
        vertices_model = (reg.vertices - t) @ rot
        stage_done("camera", 7)
        return FaceReconstruction(
            face=face, crop=crop, maps=maps, camera=camera, target=target, affine=affine,
            vertices=reg.vertices, pose=(rot, t), vertices_model=vertices_model, detail=detail,
            registration=reg, detail_levels=opts.detail_levels, seconds=seconds, warnings=warnings,
        )
