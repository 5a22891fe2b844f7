"""Face detection and landmarks, offline, with MediaPipe 0.10.21 (no ``bpy``).

MediaPipe's wheel carries its face detection (BlazeFace, full range) and face mesh (478 points)
models, so nothing is fetched at run time. Detection runs in two stages so that small faces in
large photos work: the full-range detector finds faces on a downscaled copy, then the face mesh
runs on an upscaled square window around each face. The 478 points are reduced to the iBUG-68
layout, whose bounding box defines the crop (``core/crop.py``), as for the synthetic data.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from .crop import crop_box_from_landmarks, square_window

__all__ = ["DetectedFace", "FaceDetector", "NoFaceError", "DetectorUnavailable", "MP_TO_IBUG68",
           "import_mediapipe", "min_face_px"]

# MediaPipe's package initialiser imports every "solution" with its drawing helpers, and those
# import matplotlib.pyplot: 1-3 s of a cold start for code the detector never calls.
_LAZY_SOLUTIONS = ("drawing_utils", "drawing_styles")


def _deferred_module(name: str, path: Path) -> ModuleType:
    """A module ``name`` whose code (the file ``path``) runs on the first access to a name it
    defines (a module ``__getattr__``, PEP 562): importing it costs nothing. Unlike
    :class:`importlib.util.LazyLoader`, the import machinery's own look-ups (``__spec__``) do not
    run it."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {path}")
    mod = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> object:
        if attr.startswith("__"):
            raise AttributeError(attr)
        del mod.__dict__["__getattr__"]
        try:
            loader.exec_module(mod)
        except BaseException:
            mod.__dict__["__getattr__"] = __getattr__
            raise
        return getattr(mod, attr)

    mod.__dict__["__getattr__"] = __getattr__
    return mod


def import_mediapipe() -> ModuleType:
    """``import mediapipe`` with its drawing helpers (``mediapipe.solutions.drawing_utils`` and
    ``drawing_styles``) deferred: they are placed in ``sys.modules`` before the package runs and
    execute on first use, so matplotlib is imported only if someone (another add-on) draws with
    them; everything else is MediaPipe as installed."""
    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    spec = importlib.util.find_spec("mediapipe")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'mediapipe'")
    root = Path(next(iter(spec.submodule_search_locations))) / "python" / "solutions"
    deferred: dict[str, ModuleType] = {}
    for name in _LAZY_SOLUTIONS:
        full, path = f"mediapipe.python.solutions.{name}", root / f"{name}.py"
        if full not in sys.modules and path.is_file():
            deferred[name] = sys.modules[full] = _deferred_module(full, path)
    try:
        import mediapipe
    except BaseException:
        for name in deferred:
            sys.modules.pop(f"mediapipe.python.solutions.{name}", None)
        raise
    solutions = sys.modules.get("mediapipe.python.solutions")
    for name, mod in deferred.items():  # a module found in sys.modules is not bound to its package
        if solutions is not None and name not in vars(solutions):
            setattr(solutions, name, mod)
    return mediapipe


class NoFaceError(ValueError):
    """No face was found in the image."""


class DetectorUnavailable(RuntimeError):
    """MediaPipe (the face detector) is not installed."""


# iBUG-68 point k = mean of the MediaPipe face-mesh points in row k (1 or 2 indices; the second
# repeats the first when there is one). Contour, brows, nose, eyes, outer then inner lips.
MP_TO_IBUG68 = np.array(
    [
        [127, 127], [234, 234], [93, 93], [132, 58], [58, 172], [136, 136], [150, 150], [176, 176],
        [152, 152], [400, 400], [379, 379], [365, 365], [397, 288], [361, 361], [323, 323],
        [454, 454], [356, 356],
        [70, 70], [63, 63], [105, 105], [66, 66], [107, 107],
        [336, 336], [296, 296], [334, 334], [293, 293], [300, 300],
        [168, 6], [197, 195], [5, 5], [4, 4], [75, 75], [97, 97], [2, 2], [326, 326], [305, 305],
        [33, 33], [160, 160], [158, 158], [133, 133], [153, 153], [144, 144],
        [362, 362], [385, 385], [387, 387], [263, 263], [373, 373], [380, 380],
        [61, 61], [39, 39], [37, 37], [0, 0], [267, 267], [269, 269], [291, 291],
        [321, 321], [314, 314], [17, 17], [84, 84], [91, 91],
        [78, 78], [82, 82], [13, 13], [312, 312], [308, 308], [317, 317], [14, 14], [87, 87],
    ],
    dtype=np.int64,
)

DETECT_MAX_SIDE = 1280  # px: the detector sees the photo downscaled to this long side
MESH_WINDOW = 384  # px: the face mesh sees a square window around each face at this size
WINDOW_SCALE = 2.0  # the window is this many times the detector box


@dataclass
class DetectedFace:
    """One face, in the input image's pixels (x right, y down, pixel centres at +0.5).

    Attributes
    ----------
    box : (4,) float, detector box (x0, y0, x1, y1).
    score : float, detector confidence in [0, 1].
    landmarks_478 : (478, 2) float, face mesh points.
    landmarks_68 : (68, 2) float, iBUG-68 layout.
    crop : (x0, y0, side) float, the network crop (``core/crop.py`` convention).
    depth_478 : (478,) float or None, the face mesh's relative depth of each point (photo
        pixels, smaller is nearer, origin near the head's centre; up to MediaPipe's scale).
    """

    box: np.ndarray
    score: float
    landmarks_478: np.ndarray
    landmarks_68: np.ndarray
    crop: tuple[float, float, float]
    depth_478: np.ndarray | None = None

    @property
    def size(self) -> float:
        return float(np.ptp(self.landmarks_68, axis=0).max())


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if w < img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


class FaceDetector:
    """MediaPipe face detection + face mesh, loaded once, thread-safe (calls are serialised)."""

    _unplaced = 0  # faces the last call detected but could not place landmarks on

    def __init__(self, min_score: float = 0.5):
        self.min_score = float(min_score)
        self._lock = threading.Lock()
        self._det = None
        self._mesh = None

    def _load(self) -> None:
        if self._det is not None:
            return
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import_mediapipe()
            from mediapipe.python.solutions import face_detection, face_mesh
        except ImportError as exc:
            raise DetectorUnavailable(
                f"the face detector (mediapipe 0.10.21) is not installed ({exc}); run vendor_install.py"
            ) from exc
        self._det = face_detection.FaceDetection(model_selection=1, min_detection_confidence=self.min_score)
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
        )

    def load(self) -> None:
        """Load MediaPipe and its two models now (else on the first detection)."""
        with self._lock:
            self._load()

    def close(self) -> None:
        with self._lock:
            for obj in (self._det, self._mesh):
                if obj is not None:
                    obj.close()
            self._det = self._mesh = None

    def _mesh_points(self, rgb: np.ndarray) -> np.ndarray | None:
        assert self._mesh is not None
        r = self._mesh.process(np.ascontiguousarray(rgb))
        if not r.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = r.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h, p.z * w] for p in lm], dtype=np.float64)

    def detect(self, rgb: np.ndarray, all_faces: bool = False) -> list[DetectedFace]:
        """Faces in ``rgb`` ((H, W, 3) uint8), largest first; only the largest unless ``all_faces``.

        Raises
        ------
        NoFaceError
            When there is none.
        """
        return self.detect_with_notes(rgb, all_faces)[0]

    def detect_with_notes(self, rgb: np.ndarray, all_faces: bool = False) -> tuple[list[DetectedFace], list[str]]:
        """:meth:`detect`, plus a note for every face found but not returned (the smaller ones
        without ``all_faces``; those whose landmarks could not be placed) and, with ``all_faces``,
        the smallest face size this photo can be searched for."""
        a = np.asarray(rgb)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {a.dtype} {a.shape}")
        with self._lock:
            self._unplaced = 0
            self._load()
            faces = self._detect(a, all_faces)
            unplaced = self._unplaced
        h, w = a.shape[:2]
        smallest = min_face_px(h, w)
        if not faces:
            raise NoFaceError(f"no face found in the image (in a {w}x{h} photo the detector needs a visible face "
                              f"at least about {smallest} pixels across; crop the photo closer around a small face)")
        faces.sort(key=lambda f: f.size, reverse=True)
        notes = []
        if unplaced:
            notes.append(f"{unplaced} more face(s) were detected but their landmarks could not be placed "
                         "(turned away, covered or blurred): not reconstructed")
        if not all_faces and len(faces) > 1:
            notes.append(f"{len(faces) - 1} more face(s) in the photo were not reconstructed "
                         "(only the largest is unless all faces are asked for)")
        if all_faces:
            notes.append(f"faces smaller than about {smallest} pixels across cannot be found in a {w}x{h} photo")
        return (faces if all_faces else faces[:1]), notes

    def _boxes(self, img: np.ndarray, scale: float, ox: float = 0.0, oy: float = 0.0) -> list[tuple[np.ndarray, float]]:
        """Detector boxes in photo pixels for ``img``, a part of the photo at ``scale`` whose
        top-left corner is the photo's (ox, oy)."""
        assert self._det is not None
        h, w = img.shape[:2]
        res = self._det.process(np.ascontiguousarray(img))
        out = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
            out.append((box / scale + np.array([ox, oy, ox, oy]), float(d.score[0])))
        return out

    def _detect(self, a: np.ndarray, all_faces: bool) -> list[DetectedFace]:
        h, w = a.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = a if scale == 1.0 else _resize(a, max(1, round(w * scale)), max(1, round(h * scale)))
        boxes = self._boxes(small, scale)
        if (all_faces or not boxes) and scale < 1.0:
            # Small faces in a large photo: overlapping tiles at twice the resolution.
            s2 = min(1.0, 2 * scale)
            big = a if s2 == 1.0 else _resize(a, max(1, round(w * s2)), max(1, round(h * s2)))
            tile, step = DETECT_MAX_SIDE, DETECT_MAX_SIDE * 3 // 4
            bh, bw = big.shape[:2]
            for ty in range(0, max(1, bh - tile + step), step):
                for tx in range(0, max(1, bw - tile + step), step):
                    part = big[ty:ty + tile, tx:tx + tile]
                    boxes += self._boxes(part, s2, tx / s2, ty / s2)
        faces: list[DetectedFace] = []
        for box, score in boxes:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            side = WINDOW_SCALE * max(box[2] - box[0], box[3] - box[1])
            win, x0, y0, s = square_window(a, cx, cy, side, MESH_WINDOW)
            pts = self._mesh_points(win)
            if pts is None:
                self._unplaced += 1
                continue
            pts = pts / s + (x0, y0, 0.0)
            faces.append(self._face(box, score, pts))
        if not faces:
            # The mesh's own short-range detector on the whole (downscaled) photo: close-ups that
            # the full-range detector misses.
            pts = self._mesh_points(small)
            if pts is not None:
                pts = pts / scale
                lo, hi = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
                faces.append(self._face(np.concatenate([lo, hi]), 0.0, pts))
        return _dedupe(faces)

    @staticmethod
    def _face(box: np.ndarray, score: float, pts478: np.ndarray) -> DetectedFace:
        lm68 = pts478[MP_TO_IBUG68, :2].mean(axis=1)
        return DetectedFace(box=box, score=score, landmarks_478=pts478[:, :2], landmarks_68=lm68,
                            crop=crop_box_from_landmarks(lm68), depth_478=pts478[:, 2])


def min_face_px(h: int, w: int) -> int:
    """About the smallest face (pixels across) :class:`FaceDetector` finds in an (h, w) photo.

    The full-range detector sees its input at 192 px and misses faces under about a sixteenth of
    the side it is given (measured: 40 px in a 640 px photo, 130 px but not 100 px in a 4000 px
    one); photos over ``DETECT_MAX_SIDE`` are also searched in tiles of that size at twice the
    downscaled resolution."""
    side = max(h, w)
    if side <= DETECT_MAX_SIDE:
        return max(20, round(side / 16))
    s2 = min(1.0, 2 * DETECT_MAX_SIDE / side)
    return round(DETECT_MAX_SIDE / 16 / s2)


def _dedupe(faces: list[DetectedFace], iou: float = 0.5) -> list[DetectedFace]:
    kept: list[DetectedFace] = []
    for f in sorted(faces, key=lambda f: f.size, reverse=True):
        b = np.r_[f.landmarks_68.min(0), f.landmarks_68.max(0)]
        if all(_iou(b, np.r_[k.landmarks_68.min(0), k.landmarks_68.max(0)]) < iou for k in kept):
            kept.append(f)
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
