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
``landmarks.json``  ``{"landmarks_68": [[x, y], ...]}``: the template's 68 landmark vertices
                    projected into the photo, pixels (x right, y down), iBUG 68 order
``maps.png``        crop | predicted depth | normals | correspondence | mask
``report.json``     crop box, detector score, per-stage seconds, versions, warnings
==================  =====================================================================

The metric scale comes from the networks (they learned human face sizes); the distance from
the camera comes from fitting a pinhole camera to the predicted geometry, so ``depth.npy`` is
as good as that fit (``report.json`` has its focal length and residual).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .export import AtomicFolder, write_json, write_obj
from .images import save_png_atomic
from .normal_map import bake_normal_map
from .pipeline import FaceReconstruction, subdivide_corner_uvs
from .projection import crop_depth, depth_map, project_landmarks
from .texture import clean_texture
from .viz import colormap, normals_rgb

__all__ = ["write_result", "RESULT_FILES", "versions"]

RESULT_FILES = ("face.obj", "face.mtl", "face_base.obj", "texture.png", "texture_raw.png", "normal.png",
                "depth.npy", "landmarks.json", "maps.png", "report.json")
FAST_PNG = 1  # zlib level of the large PNGs: 3x faster than 6, files about 20 % larger
MODEL_TO_OBJ_M = 0.001  # mm -> m; the model frame already has OBJ's axes (+y up, +z to viewer)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"pix2vertex": __version__}
    for pkg in ("torch", "numpy", "scipy", "mediapipe"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def detailed_mesh(rec: FaceReconstruction, template_faces: np.ndarray, template_uvs: np.ndarray,
                  strength: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices label frame mm, quads, corner UVs) of the subdivided, displaced template."""
    d = rec.detail
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


def write_result(
    out_dir: str | Path,
    photo: np.ndarray,
    rec: FaceReconstruction,
    template: Any,
    report: dict | None = None,
    overwrite: bool = False,
    texture_size: int = 1024,
) -> Path:
    """Write every file of :data:`RESULT_FILES` for ``rec`` into ``out_dir`` (atomically).

    template : the face model's ``Template`` (faces, per-corner UVs, landmark vertices).
    report : extra entries for ``report.json`` (input path, image notes...).
    """
    t0 = time.perf_counter()
    faces = np.asarray(template.faces)
    uvs = np.asarray(template.uvs)
    seconds: dict[str, float] = {}
    if rec.detail is not None:
        v, q, quv = detailed_mesh(rec, faces, uvs)
        tris = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    else:
        v, tris = rec.vertices, template.triangles()
    # the images first (the PNG encoders run in threads while the OBJ text is formatted)
    ts = time.perf_counter()
    dcrop = crop_depth(rec.camera, v, tris)
    seconds["depth"] = time.perf_counter() - ts
    ts = time.perf_counter()
    tex = clean_texture(photo, rec.camera, rec.vertices, template.vertices_cm * 10.0, faces, uvs,
                        mask=rec.maps["mask"], size=texture_size, depth_crop=dcrop)
    seconds["texture"] = time.perf_counter() - ts
    ts = time.perf_counter()
    normal = face_normal_map(rec, faces, uvs, texture_size)
    seconds["normal_map"] = time.perf_counter() - ts
    with AtomicFolder(out_dir, overwrite=overwrite) as tmp, ThreadPoolExecutor(2) as pool:
        tw = time.perf_counter()
        pngs = [pool.submit(save_png_atomic, tmp / name, img, FAST_PNG)
                for name, img in (("texture.png", tex.texture), ("texture_raw.png", tex.raw),
                                  ("normal.png", normal), ("maps.png", maps_png(rec)))]
        header = f"pix2vertex {versions()['pix2vertex']}: registered ICT-FaceKit face region (MIT), metres"
        write_obj(tmp, rec.vertices_model * MODEL_TO_OBJ_M, faces, uvs, stem="face_base", header=header,
                  normal_map="normal.png")
        if rec.detail is not None:
            write_obj(tmp, rec.to_model(v) * MODEL_TO_OBJ_M, q, quv, stem="face",
                      header=header + "; fine detail, one Simple subdivision level")
        else:
            write_obj(tmp, rec.vertices_model * MODEL_TO_OBJ_M, faces, uvs, stem="face", header=header,
                      normal_map="normal.png")
        seconds["write_obj"] = time.perf_counter() - tw
        np.save(tmp / "depth.npy", depth_map(rec.camera, dcrop, (photo.shape[0], photo.shape[1])))
        lm = project_landmarks(rec.camera, rec.vertices, template.landmarks_68)
        write_json(tmp / "landmarks.json", {"landmarks_68": np.round(lm, 2)})

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
                           for k, s in seconds.items()},
                        "write_total": round(time.perf_counter() - t0, 4)},
            "versions": versions(),
            "warnings": rec.warnings,
            "units": {"obj": "metres, +y up, +z towards the viewer, head pose removed",
                      "depth": "millimetres along the optical axis, NaN off the face",
                      "landmarks": "photo pixels, x right, y down, iBUG 68 order"},
        }
        for f in pngs:
            f.result()
        seconds["write_files"] = time.perf_counter() - tw
        doc["seconds"]["write_files"] = round(seconds["write_files"], 4)
        write_json(tmp / "report.json", doc)
    return Path(out_dir)
