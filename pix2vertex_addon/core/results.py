"""The files of one reconstructed face, written atomically into one folder (no ``bpy``).

==================  =====================================================================
``face.obj/.mtl``   registered template with fine detail (one Simple subdivision level: the
                    template's 9,409 vertices first, in the template's order), UVs, metres,
                    OBJ axes (+y up, +z towards the viewer), head pose removed
``face_base.obj``   the same without subdivision and detail: exactly the template's topology
``texture.png``     the photo projected onto the template's UV layout (1024 x 1024), cleaned:
                    hair, glasses, background and unseen skin filled (:mod:`.texture`)
``texture_raw.png`` the plain projection, before the clean-up
``normal.png``      the fine detail as a tangent-space normal map (:mod:`.normal_map`)
``depth.npy``       float32 (H, W) of the input photo: distance from the camera along the
                    optical axis in millimetres (larger is farther), NaN off the face
``landmarks.json``  ``{"landmarks_68": [[x, y], ...], "detected_478": [[x, y], ...]}``: the
                    fitted template's iBUG-68 points projected into the photo (the 17 jaw
                    points on its occluding contour) and MediaPipe's 478 detected points,
                    pixels (x right, y down)
``maps.png``        crop | predicted depth | normals | correspondence | mask
``report.json``     crop box, detector score, per-stage seconds, versions, warnings, and
                    ``identity``: what the result came from (see :func:`result_identity`)
==================  =====================================================================

The metric scale comes from the networks (they learned human face sizes); the distance from
the camera comes from fitting a pinhole camera to the predicted geometry, so ``depth.npy`` is
as good as that fit (``report.json`` has its focal length and residual).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .export import AtomicFolder, format_obj, sha256_file, write_json, write_obj
from .geometry import DetailResult, subdivide_corner_uvs
from .images import save_png_atomic
from .landmarks import photo_landmarks_68
from .normal_map import bake_normal_map
from .pipeline import FaceReconstruction
from .projection import bake_vertex_field, crop_depth, depth_map, texel_weights
from .texture import clean_texture, layout_tables
from .viz import colormap, normals_rgb

__all__ = ["write_result", "prepare_layouts", "RESULT_FILES", "versions", "input_identity", "array_identity",
           "result_identity",
           "read_identity", "identity_mismatch"]

RESULT_FILES = ("face.obj", "face.mtl", "face_base.obj", "texture.png", "texture_raw.png", "normal.png",
                "depth.npy", "landmarks.json", "maps.png", "report.json")
FAST_PNG = 1  # zlib level of the large PNGs: 3x faster than 6, files about 20 % larger
MODEL_TO_OBJ_M = 0.001  # mm -> m; the model frame already has OBJ's axes (+y up, +z to viewer)


def versions() -> dict[str, str]:
    """The add-on's and the runtime packages' versions (looked up once: a metadata scan)."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"pix2vertex": __version__}
    for pkg in ("torch", "onnxruntime", "numpy", "scipy", "mediapipe"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return tuple(out.items())


def input_identity(path: str | os.PathLike[str]) -> dict:
    """What a photo file is: resolved path, size, modification time and sha256 of its bytes.
    Raises OSError when the file cannot be read."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(p)}


def array_identity(name: str, rgb: np.ndarray) -> dict:
    """The same for a photo given as pixels (a Blender image): its name, shape and pixel hash."""
    a = np.ascontiguousarray(rgb)
    h = hashlib.sha256(str(a.shape).encode() + a.dtype.str.encode())
    h.update(a.tobytes())
    return {"path": None, "name": name, "size": int(a.nbytes), "mtime_ns": None, "sha256": h.hexdigest()}


def result_identity(source: dict, options: dict, weights: Any) -> dict:
    """The record a result keeps of what it came from: the input (:func:`input_identity`), every
    option that changes the result, and the networks' weight hashes."""
    return {"input": source, "options": options, "weights": weights}


def read_identity(folder: str | os.PathLike[str]) -> dict | None:
    """The identity recorded in ``folder/report.json``; None when there is no readable record."""
    try:
        doc = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ident = doc.get("identity") if isinstance(doc, dict) else None
    return ident if isinstance(ident, dict) else None


def identity_mismatch(recorded: dict | None, wanted: dict) -> str | None:
    """None when a recorded result is the one ``wanted`` would produce, else the reason it is not
    (other input, changed photo, other options, other weights, no record)."""
    if recorded is None:
        return "has no record of its input (made by an older version or not a result)"
    r_in, w_in = recorded.get("input") or {}, wanted["input"]
    if r_in.get("path") != w_in.get("path") or r_in.get("name") != w_in.get("name"):
        return f"holds the result of another input ({r_in.get('path') or r_in.get('name')})"
    if r_in.get("sha256") != w_in.get("sha256"):
        return "was made from an earlier version of this photo (its content changed)"
    if recorded.get("options") != wanted["options"]:
        return "was made with other options"
    if recorded.get("weights") != wanted["weights"]:
        return "was made with other network weights"
    return None


def detailed_mesh(rec: FaceReconstruction, template_faces: np.ndarray, template_uvs: np.ndarray,
                  strength: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices label frame mm, quads, corner UVs) of the subdivided, displaced template."""
    d = rec.detail
    if d is None:
        raise ValueError("this reconstruction was made without detail (PipelineOptions.detail)")
    v = d.vertices + strength * d.displacement[:, None] * d.normals
    uv = subdivide_corner_uvs(template_faces, template_uvs, rec.detail_levels)
    return v, d.faces, uv


def face_normal_map(rec: FaceReconstruction, template_faces: np.ndarray, template_uvs: np.ndarray,
                    size: int = 1024) -> np.ndarray:
    """(size, size, 3) uint8 tangent-space normal map of the fine detail at strength 1 (flat
    without detail)."""
    if rec.detail is None:
        flat = np.empty((size, size, 3), dtype=np.uint8)
        flat[:] = (128, 128, 255)
        return flat
    d = rec.detail
    uv = subdivide_corner_uvs(template_faces, template_uvs, rec.detail_levels)
    return bake_normal_map(d.vertices, d.faces, uv, d.displacement, size=size)


def maps_png(rec: FaceReconstruction) -> np.ndarray:
    """(R, 5R, 3) uint8: crop, depth, normals, correspondence, mask."""
    m = rec.maps["mask"] >= 0.5
    xyz = rec.maps["xyz"]
    z = xyz[..., 2]
    lo, hi = (np.percentile(z[m], [2, 98]) if m.any() else (0.0, 1.0))
    depth = colormap(-z, -hi, -lo, m)  # near = bright
    normals = normals_rgb(xyz, m)
    corr = (np.clip(rec.maps["corr"], 0, 1) * 255 * m[..., None]).astype(np.uint8)
    mask = np.repeat((rec.maps["mask"] * 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.concatenate([rec.crop, depth, normals, corr, mask], axis=1)


def landmarks_doc(fitted_68: np.ndarray, detected_478: np.ndarray) -> dict:
    """``landmarks.json``: the fitted template's iBUG-68 points and, when the detector gave
    MediaPipe's 478 face-mesh points, those as detected (photo pixels)."""
    doc = {"landmarks_68": np.round(fitted_68, 2)}
    det = np.asarray(detected_478, dtype=np.float64)
    if det.shape == (478, 2):
        doc["detected_478"] = np.round(det, 2)
    return doc


def prepare_layouts(template: Any, detail: DetailResult | None = None, detail_levels: int = 1,
                    texture_size: int = 1024, detail_texture_sizes: tuple[int, ...] = ()) -> None:
    """Compute (and keep, in the layout caches: ``core/layout_cache.py``) what
    :func:`write_result` and Blender's detail image need of ``template``'s layout: the
    texture's texel weights, mirror look-up and border ramps, the OBJ's layout lines and, given
    a ``detail`` result of the same template, its normal map's and (each of
    ``detail_texture_sizes``) displacement image's tables. The same calls as a real result, on
    zeros. With the caches' disk folder set, tables an earlier process wrote are loaded."""
    faces, uvs = np.asarray(template.faces), np.asarray(template.uvs)
    rest = template.vertices_cm * 10.0
    texel_weights(faces, uvs, texture_size)
    layout_tables(rest, faces, uvs, texture_size)
    format_obj(rest, faces, uvs, mtl_file="face_base.mtl")
    if detail is None:
        return
    uv = subdivide_corner_uvs(faces, uvs, detail_levels)
    zeros = np.zeros(len(detail.vertices))
    format_obj(detail.vertices, detail.faces, uv, mtl_file="face.mtl")
    bake_normal_map(detail.vertices, detail.faces, uv, zeros, size=texture_size)
    for size in detail_texture_sizes:
        bake_vertex_field(zeros, detail.faces, uv, size=size)


def _write_normal_map(path: Path, rec: FaceReconstruction, faces: np.ndarray, uvs: np.ndarray,
                      size: int) -> float:
    """Bake the detail's normal map (:func:`face_normal_map`) and write it; returns the bake's
    seconds (the PNG's not included)."""
    t = time.perf_counter()
    normal = face_normal_map(rec, faces, uvs, size)
    took = time.perf_counter() - t
    save_png_atomic(path, normal, FAST_PNG)
    return took


def _write_objs(tmp: Path, rec: FaceReconstruction, v: np.ndarray, q: np.ndarray | None, quv: np.ndarray | None,
                faces: np.ndarray, uvs: np.ndarray, header: str) -> float:
    """``face_base.obj`` and ``face.obj`` (the detailed mesh ``v``, ``q``, ``quv`` when given) with
    their ``.mtl`` files; returns the seconds they took."""
    t = time.perf_counter()
    write_obj(tmp, rec.vertices_model * MODEL_TO_OBJ_M, faces, uvs, stem="face_base", header=header,
              normal_map="normal.png")
    if q is not None:
        write_obj(tmp, rec.to_model(v) * MODEL_TO_OBJ_M, q, quv, stem="face",
                  header=header + "; fine detail, one Simple subdivision level")
    else:
        write_obj(tmp, rec.vertices_model * MODEL_TO_OBJ_M, faces, uvs, stem="face", header=header,
                  normal_map="normal.png")
    return time.perf_counter() - t


def _write_depth_landmarks(tmp: Path, photo: np.ndarray, rec: FaceReconstruction, template: Any,
                           dcrop: np.ndarray) -> None:
    """``depth.npy`` and ``landmarks.json``."""
    np.save(tmp / "depth.npy", depth_map(rec.camera, dcrop, (photo.shape[0], photo.shape[1])))
    lm = photo_landmarks_68(rec.camera, rec.vertices, template, mask=rec.maps["mask"])
    write_json(tmp / "landmarks.json", landmarks_doc(lm, rec.face.landmarks_478))


def write_result(
    out_dir: str | Path,
    photo: np.ndarray,
    rec: FaceReconstruction,
    template: Any,
    report: dict | None = None,
    overwrite: bool = False,
    texture_size: int = 1024,
    extra: Callable[[Path], object] | None = None,
) -> Path:
    """Write every file of :data:`RESULT_FILES` for ``rec`` into ``out_dir`` (atomically).

    template : the face model's ``Template`` (faces, per-corner UVs, landmark vertices).
    report : extra entries for ``report.json`` (input path, image notes...).
    extra : ``extra(folder)`` writes more files into the result folder before it appears (the
        full head's files), so they are part of the same atomic result.
    """
    t0 = time.perf_counter()
    faces = np.asarray(template.faces)
    uvs = np.asarray(template.uvs)
    seconds: dict[str, float] = {}
    q: np.ndarray | None = None
    quv: np.ndarray | None = None
    header = f"pix2vertex {versions()['pix2vertex']}: registered ICT-FaceKit face region (MIT), metres"
    with AtomicFolder(out_dir, overwrite=overwrite) as tmp, ThreadPoolExecutor(2) as pool:
        # beside the depth raster and the texture clean-up: the normal map and its PNG, the maps'
        # PNG, the OBJ text, the depth and the landmarks (numpy, OpenCV and zlib run without the
        # GIL); then the textures' PNGs
        normal_job = pool.submit(_write_normal_map, tmp / "normal.png", rec, faces, uvs, texture_size)
        pngs: list[Future] = [normal_job,
                              pool.submit(lambda: save_png_atomic(tmp / "maps.png", maps_png(rec), FAST_PNG))]
        if rec.detail is not None:
            v, q, quv = detailed_mesh(rec, faces, uvs)
            tris = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
        else:
            v, tris = rec.vertices, template.triangles()
        ts = time.perf_counter()
        dcrop = crop_depth(rec.camera, v, tris)
        seconds["depth"] = time.perf_counter() - ts
        obj_job = pool.submit(_write_objs, tmp, rec, v, q, quv, faces, uvs, header)
        side_job = pool.submit(_write_depth_landmarks, tmp, photo, rec, template, dcrop)
        ts = time.perf_counter()
        tex = clean_texture(photo, rec.camera, rec.vertices, template.vertices_cm * 10.0, faces, uvs,
                            mask=rec.maps["mask"], size=texture_size, depth_crop=dcrop)
        seconds["texture"] = time.perf_counter() - ts
        tw = time.perf_counter()
        pngs += [pool.submit(save_png_atomic, tmp / name, img, FAST_PNG)
                 for name, img in (("texture.png", tex.texture), ("texture_raw.png", tex.raw))]
        seconds["write_obj"] = obj_job.result()
        side_job.result()

        x0, y0, side = rec.face.crop
        doc = {
            **(report or {}),
            "crop_box": {"x0": x0, "y0": y0, "side": side, "network_resolution": rec.camera.resolution},
            "detector_score": rec.face.score,
            "camera": {"focal_px_in_crop": rec.camera.focal, "z_ref_mm": rec.camera.z_ref,
                       "focal_px_in_photo": rec.camera.focal * rec.camera.image_scale},
            "head_pose": {"rotation_model_to_camera": rec.pose[0], "translation_mm": rec.pose[1]},
            "registration": {"outer_iterations": rec.registration.n_outer, "solves": rec.registration.n_solves},
            "texture_seen_fraction": float((tex.confidence > 0).mean()),
            "texture_filled_fraction": tex.filled_fraction,
            "seconds": {**{k: round(s, 4) for k, s in rec.seconds.items()},
                        **{(k if k.startswith("write_") else f"write_{k}"): round(s, 4)
                           for k, s in seconds.items()}},
            "versions": versions(),
            "warnings": rec.warnings,
            "units": {"obj": "metres, +y up, +z towards the viewer, head pose removed",
                      "depth": "millimetres along the optical axis, NaN off the face",
                      "landmarks": "photo pixels, x right, y down, iBUG 68 order"},
        }
        for f in pngs:
            f.result()
        doc["seconds"]["write_normal_map"] = round(normal_job.result(), 4)
        if extra is not None:  # after the PNGs: the head's material embeds texture.png
            ts = time.perf_counter()
            extra(tmp)
            seconds["extra"] = time.perf_counter() - ts
            doc["seconds"]["write_extra"] = round(seconds["extra"], 4)
        seconds["write_files"] = time.perf_counter() - tw
        doc["seconds"]["write_files"] = round(seconds["write_files"], 4)
        doc["seconds"]["write_total"] = round(time.perf_counter() - t0, 4)
        write_json(tmp / "report.json", doc)
    return Path(out_dir)
