"""ICT-FaceKit face model access (no ``bpy``).

The model is read from a configurable path (see :func:`resolve_face_model_path`), loaded once and
cached, and validated before use. With no path configured it is the pack shipped with the add-on
(``pix2vertex_addon/face_model_pack/``: the same arrays, the bases as fp16, built by
``scripts/build_face_pack.py``); a path may name that kind of folder or ``ict_facekit.npz``. The arrays keep the model's own unit, **centimetres**; the
face-region *template* (the mesh the add-on warps) is also offered in **metres**, the unit of
Blender scenes.

Coordinate frame of the model: +x is the face's left, +y up, +z out of the face (towards a frontal
camera).

The face model derives from ICT-FaceKit (USC Institute for Creative Technologies, MIT licence).
"""

from __future__ import annotations

import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ENV_VAR",
    "MODEL_TO_BLENDER",
    "FaceModel",
    "FaceModelError",
    "Template",
    "PACK_FILES",
    "default_face_model_path",
    "shared_face_model_path",
    "load_face_model",
    "resolve_face_model_path",
]

ENV_VAR = "P2V_FACE_MODEL"
CM_TO_M = 0.01

# Face-model frame (+x face-left, +y up, +z out of the face) -> Blender's (+z up, front view looks
# along +y, so the face looks towards -y): a +90 degree rotation about x.
MODEL_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# Number of vertices / polygons the loader checks the file against.
N_VERTICES = 26719
N_FACES = 26384
N_IDENTITY = 100
N_EXPRESSION = 53
FACE_REGION = "face"


class FaceModelError(RuntimeError):
    """The face model file is missing, unreadable or not an ICT-FaceKit model."""


def _repo_root() -> Path:
    # pix2vertex_addon/core/face_model.py -> repository (or installed extension) root
    return Path(__file__).resolve().parents[2]


# The shipped pack: file -> arrays it holds. The bases are stored as fp16 (compressed npz) and
# read back as float32; everything else keeps the dtype of ict_facekit.npz.
PACK_FILES = {
    "mesh.npz": (
        "neutral_vertices", "faces", "uvs", "face_uvs", "face_material", "material_names",
        "identity_names", "expression_names", "landmarks_68", "rigid_vertices", "region_names",
        "region_vertex_ranges",
    ),
    "identity.npz": ("identity_basis",),
    "expression.npz": ("expression_basis",),
}
PACK_FP16 = ("identity_basis", "expression_basis")


def default_face_model_path() -> Path:
    """The face-model pack shipped with the add-on (``pix2vertex_addon/face_model_pack``)."""
    return Path(__file__).resolve().parents[1] / "face_model_pack"


def shared_face_model_path() -> Path:
    """``../shared/face-model/ict_facekit.npz`` next to the repository (the pack's source)."""
    return _repo_root().parent / "shared" / "face-model" / "ict_facekit.npz"


def synth_face_model_path() -> Path:
    """The model the synthetic data are rendered from: ``$P2V_FACE_MODEL``, else ICT-FaceKit's own
    float32 ``ict_facekit.npz`` where it is (:func:`shared_face_model_path`), else the shipped
    pack. The training, validation and test splits are rendered from the npz: the pack's fp16
    bases move vertices by up to 0.005 mm, enough to change a few pixels of a sample, so the
    splits (and the figures measured on them) would not be reproduced exactly from the pack."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    shared = shared_face_model_path()
    return shared if shared.is_file() else default_face_model_path()


def resolve_face_model_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Pick the face model path: explicit argument, then ``$P2V_FACE_MODEL``, then the default."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_face_model_path()


_FIX_HINT = (
    "Clear the face model path to use the pack shipped with the add-on, or point it at "
    "ict_facekit.npz (or a pack folder): in the add-on preferences, with --face-model PATH, or with "
    f"the environment variable {ENV_VAR}."
)


@dataclass(frozen=True)
class Template:
    """The face-region template: the mesh the add-on adds to the scene and warps.

    Attributes
    ----------
    vertices_cm : (V, 3) float64
        Neutral face-region vertices in centimetres (V = 9409 for ICT-FaceKit).
    faces : list of polygons as a padded (F, 4) int64 array; -1 pads triangles.
    uvs : (F, 4, 2) float32
        Per-corner UVs, NaN where the corner is padding.
    """

    vertices_cm: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    landmarks_68: np.ndarray

    @property
    def vertices_m(self) -> np.ndarray:
        """(V, 3) float64 vertices in metres (Blender's unit)."""
        return self.vertices_cm * CM_TO_M

    @property
    def vertices_blender(self) -> np.ndarray:
        """(V, 3) float64 vertices in metres in Blender's frame (z up, face looking along -y)."""
        return self.vertices_m @ MODEL_TO_BLENDER.T

    @property
    def n_vertices(self) -> int:
        return int(self.vertices_cm.shape[0])

    def polygon_sizes(self) -> np.ndarray:
        """(F,) int number of corners of each polygon (3 or 4)."""
        return (self.faces >= 0).sum(axis=1)

    def triangles(self) -> np.ndarray:
        """(T, 3) int64 triangulation (quads split along their 0-2 diagonal)."""
        f = self.faces
        quad = f[:, 3] >= 0
        t1 = f[:, [0, 1, 2]]
        t2 = f[quad][:, [0, 2, 3]]
        return np.concatenate([t1, t2], axis=0)

    def loops(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flattened polygon corners for Blender: (loop_vertex, loop_start, loop_total)."""
        sizes = self.polygon_sizes()
        valid = self.faces >= 0
        loop_vertex = self.faces[valid]
        loop_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return loop_vertex.astype(np.int64), loop_start.astype(np.int64), sizes.astype(np.int64)

    def loop_uvs(self) -> np.ndarray:
        """(L, 2) float32 UV per corner, in the order of :meth:`loops`."""
        return self.uvs[self.faces >= 0]


class FaceModel:
    """Validated, read-only view of the ICT-FaceKit arrays (centimetres)."""

    def __init__(self, arrays: dict[str, np.ndarray], path: Path):
        self.path = path
        self.neutral_vertices: np.ndarray = arrays["neutral_vertices"]
        self.faces: np.ndarray = arrays["faces"]
        self.uv_coords: np.ndarray = arrays["uvs"]
        self.face_uvs: np.ndarray = arrays["face_uvs"]
        self.face_material: np.ndarray = arrays["face_material"]
        self.material_names = [str(s) for s in arrays["material_names"]]
        self.identity_basis: np.ndarray = arrays["identity_basis"]
        self.identity_names = [str(s) for s in arrays["identity_names"]]
        self.expression_basis: np.ndarray = arrays["expression_basis"]
        self.expression_names = [str(s) for s in arrays["expression_names"]]
        self.landmarks_68: np.ndarray = arrays["landmarks_68"].astype(np.int64)
        self.rigid_vertices: np.ndarray = arrays["rigid_vertices"].astype(np.int64)
        names = [str(s) for s in arrays["region_names"]]
        ranges = arrays["region_vertex_ranges"].astype(np.int64)
        self.regions: dict[str, tuple[int, int]] = {
            n: (int(a), int(b) + 1) for n, (a, b) in zip(names, ranges)
        }
        for a in (self.neutral_vertices, self.identity_basis, self.expression_basis):
            a.setflags(write=False)
        self._template: Template | None = None

    # -- regions -----------------------------------------------------------------------------
    def region_slice(self, name: str) -> slice:
        """Vertex slice of a region (regions are contiguous, ``stop`` is exclusive)."""
        try:
            a, b = self.regions[name]
        except KeyError:
            raise KeyError(f"unknown region {name!r}; known: {sorted(self.regions)}") from None
        return slice(a, b)

    def faces_in_region(self, name: str) -> np.ndarray:
        """Indices of polygons whose corners all lie in region ``name``."""
        s = self.region_slice(name)
        f = self.faces
        inside = ((f >= s.start) & (f < s.stop)) | (f < 0)
        return np.flatnonzero(inside.all(axis=1))

    # -- shapes ------------------------------------------------------------------------------
    def sample_face(
        self,
        identity: np.ndarray | None = None,
        expression: np.ndarray | dict[str, float] | None = None,
        region: str | None = None,
    ) -> np.ndarray:
        """Vertices of a face in centimetres.

        Parameters
        ----------
        identity : (<=100,) float, optional
            Identity weights (~N(0, 1) for plausible faces); missing trailing weights are 0.
        expression : (<=53,) float or {name: weight}, optional
            Expression weights in [0, 1] (ARKit names, see ``expression_names``).
        region : str, optional
            Return only this region's vertices (e.g. ``"face"``).

        Returns
        -------
        (V, 3) float64 vertices, cm.
        """
        s = self.region_slice(region) if region else slice(0, self.neutral_vertices.shape[0])
        v = self.neutral_vertices[s].astype(np.float64)
        if identity is not None:
            w = np.asarray(identity, dtype=np.float64).ravel()
            if w.size > N_IDENTITY:
                raise ValueError(f"identity has {w.size} weights, the model has {N_IDENTITY}")
            if w.size:
                basis = self.identity_basis[: w.size, s]
                v = v + np.tensordot(w, basis, axes=1)
        if expression is not None:
            w = self.expression_weights(expression)
            nz = np.flatnonzero(w)
            if nz.size:
                v = v + np.tensordot(w[nz], self.expression_basis[nz, s], axes=1)
        return v

    def expression_weights(self, expression: np.ndarray | dict[str, float]) -> np.ndarray:
        """(53,) float64 weights from an array (missing trailing weights are 0) or {name: weight}."""
        w = np.zeros(N_EXPRESSION)
        if isinstance(expression, dict):
            for k, val in expression.items():
                try:
                    w[self.expression_names.index(k)] = float(val)
                except ValueError:
                    raise KeyError(f"unknown expression {k!r}; see FaceModel.expression_names") from None
        else:
            e = np.asarray(expression, dtype=np.float64).ravel()
            if e.size > N_EXPRESSION:
                raise ValueError(f"expression has {e.size} weights, the model has {N_EXPRESSION}")
            w[: e.size] = e
        return w

    # -- template ----------------------------------------------------------------------------
    @property
    def template(self) -> Template:
        """The face-region template (vertex order of the model, UVs per corner)."""
        if self._template is None:
            s = self.region_slice(FACE_REGION)
            idx = self.faces_in_region(FACE_REGION)
            faces = self.faces[idx].astype(np.int64)
            faces = np.where(faces >= 0, faces - s.start, -1)
            fuv = self.face_uvs[idx]
            uvs = np.where((fuv >= 0)[..., None], self.uv_coords[np.maximum(fuv, 0)], np.nan)
            lm = self.landmarks_68
            if lm.min() < s.start or lm.max() >= s.stop:
                raise FaceModelError("landmarks lie outside the face region")
            t = Template(
                vertices_cm=self.neutral_vertices[s].astype(np.float64),
                faces=faces,
                uvs=uvs.astype(np.float32),
                landmarks_68=lm - s.start,
            )
            for a in (t.vertices_cm, t.faces, t.uvs, t.landmarks_68):
                a.setflags(write=False)
            self._template = t
        return self._template


_EXPECTED = {
    "neutral_vertices": ((N_VERTICES, 3), "f"),
    "faces": ((N_FACES, 4), "i"),
    "uvs": ((None, 2), "f"),
    "face_uvs": ((N_FACES, 4), "i"),
    "face_material": ((N_FACES,), "i"),
    "material_names": ((None,), "U"),
    "identity_basis": ((N_IDENTITY, N_VERTICES, 3), "f"),
    "identity_names": ((N_IDENTITY,), "U"),
    "expression_basis": ((N_EXPRESSION, N_VERTICES, 3), "f"),
    "expression_names": ((N_EXPRESSION,), "U"),
    "landmarks_68": ((68,), "i"),
    "rigid_vertices": ((None,), "i"),
    "region_names": ((None,), "U"),
    "region_vertex_ranges": ((None, 2), "i"),
}


def _read_npz(path: Path, keys) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise FaceModelError(f"{path} is not an ICT-FaceKit model: missing arrays {missing}. {_FIX_HINT}")
        return {k: npz[k] for k in keys}


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``ict_facekit.npz`` or of a pack folder (fp16 bases as float32)."""
    if path.is_dir():
        arrays: dict[str, np.ndarray] = {}
        for name, keys in PACK_FILES.items():
            if not (path / name).is_file():
                raise FaceModelError(f"Face model pack {path} lacks {name}. {_FIX_HINT}")
            arrays.update(_read_npz(path / name, keys))
        for k in PACK_FP16:
            arrays[k] = arrays[k].astype(np.float32)
        return arrays
    if not path.is_file():
        raise FaceModelError(f"Face model path {path} is not a file. {_FIX_HINT}")
    return _read_npz(path, _EXPECTED)


def _read_and_validate(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FaceModelError(f"Face model not found at {path}. {_FIX_HINT}")
    try:
        arrays = _read_arrays(path)
    except FaceModelError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FaceModelError(f"Face model {path} is unreadable or corrupt ({exc}). {_FIX_HINT}") from exc
    for key, (shape, kind) in _EXPECTED.items():
        a = arrays[key]
        ok_shape = len(a.shape) == len(shape) and all(
            s is None or s == d for s, d in zip(shape, a.shape)
        )
        if not ok_shape or a.dtype.kind not in (kind, "u" if kind == "i" else kind):
            raise FaceModelError(
                f"{path}: array {key!r} has shape {a.shape} dtype {a.dtype}, expected "
                f"{tuple('*' if s is None else s for s in shape)} of kind {kind!r}. {_FIX_HINT}"
            )
    names = [str(s) for s in arrays["region_names"]]
    if FACE_REGION not in names or len(names) != arrays["region_vertex_ranges"].shape[0]:
        raise FaceModelError(f"{path}: no {FACE_REGION!r} region. {_FIX_HINT}")
    f = arrays["faces"]
    if f.max() >= N_VERTICES or f.min() < -1:
        raise FaceModelError(f"{path}: polygon indices out of range. {_FIX_HINT}")
    for key, n in (("face_uvs", len(arrays["uvs"])), ("landmarks_68", N_VERTICES), ("rigid_vertices", N_VERTICES),
                   ("region_vertex_ranges", N_VERTICES)):
        a = arrays[key]
        if a.size and (a.max() >= n or a.min() < (-1 if key == "face_uvs" else 0)):
            raise FaceModelError(f"{path}: array {key!r} has indices out of range (0 to {n - 1}). {_FIX_HINT}")
    if not np.isfinite(arrays["neutral_vertices"]).all():
        raise FaceModelError(f"{path}: neutral vertices are not finite. {_FIX_HINT}")
    return arrays


_cache: dict[Path, FaceModel] = {}
_lock = threading.Lock()


def load_face_model(path: str | os.PathLike[str] | None = None) -> FaceModel:
    """Load (once per resolved path, thread-safe) and validate the ICT-FaceKit model.

    Raises
    ------
    FaceModelError
        With the path and how to fix it, when the file is missing, corrupt or of another kind.
    """
    p = resolve_face_model_path(path).resolve()
    with _lock:
        model = _cache.get(p)
        if model is None:
            model = FaceModel(_read_and_validate(p), p)
            _cache[p] = model
        return model


def clear_cache() -> None:
    """Forget loaded models (tests, or after the user changes the path)."""
    with _lock:
        _cache.clear()


def load_synth_face_model(path: str | os.PathLike[str] | None = None) -> FaceModel:
    """:func:`load_face_model` of ``path``, by default of :func:`synth_face_model_path` (for the
    synthetic data, training and evaluation)."""
    return load_face_model(path or synth_face_model_path())
