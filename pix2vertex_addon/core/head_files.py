"""The head's result files (no ``bpy``): ``head.obj`` + ``head.mtl`` (the neutral Basis, one
material per part), ``head.glb`` (glTF with the shape keys as morph targets, ``Photo expression``
on) and ``head.json`` (the fitted weights). Metres, +y up, +z towards the viewer, head pose removed
(like ``face.obj``). Each file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from .atomic import write_bytes_atomic
from .export import _rows, _unique_rows_2d, read_obj_vertices
from .face_model import FaceModel, load_face_model
from .gltf import GltfMaterial, write_glb
from .head import ARKIT_FROM_ICT, HEAD_MATERIALS, PHOTO_EXPRESSION, Head, build_head

__all__ = ["HEAD_FILES", "ROUGHNESS", "head_from_result", "material_colors", "read_obj_vertices", "seam_uvs",
           "write_head_files"]

HEAD_FILES = ("head.obj", "head.mtl", "head.glb", "head.json")
MM_TO_M = 0.001

# Linear RGB colours of the untextured parts; "skin" and "scalp" are replaced from the texture.
_COLORS: dict[str, tuple[float, float, float]] = {
    "face": (1.0, 1.0, 1.0), "skin": (0.60, 0.40, 0.32), "scalp": (0.50, 0.38, 0.32), "mouth": (0.25, 0.06, 0.06),
    "gums": (0.55, 0.18, 0.18), "teeth": (0.80, 0.77, 0.68), "sclera": (0.85, 0.83, 0.80),
    "iris": (0.10, 0.06, 0.03), "pupil": (0.005, 0.005, 0.005),
}
ROUGHNESS = {"teeth": 0.3, "sclera": 0.15, "iris": 0.2, "pupil": 0.1, "mouth": 0.8, "gums": 0.5}
# The scalp: the skin colour with this much of its saturation and of its brightness kept.
SCALP_SATURATION, SCALP_BRIGHTNESS = 0.6, 0.9


def seam_uvs(head: Head) -> np.ndarray:
    """(K, 2) UVs of the face-textured polygons' corners on the seam with the rest of the head
    (vertices shared with polygons of another part): where the texture meets the head's skin."""
    face = head.material == HEAD_MATERIALS.index("face")
    other = head.faces[~face]
    on_seam = np.zeros(len(head.vertices), dtype=bool)
    on_seam[other[other >= 0]] = True
    f = head.faces[face]
    corner = (f >= 0) & on_seam[np.maximum(f, 0)]
    return head.corner_uvs[face][corner].astype(np.float64)


def material_colors(texture_rgb: np.ndarray | None = None,
                    seam_uv: np.ndarray | None = None) -> dict[str, tuple[float, float, float]]:
    """Part colours (linear RGB). The skin takes the texture's median colour along ``seam_uv``
    (:func:`seam_uvs`; the clean-up fades the texture's border to one skin colour, so the head
    joins it without a seam), else over the texture's seen texels; the scalp is that skin colour,
    less saturated and a little darker."""
    colors = dict(_COLORS)
    if texture_rgb is not None:
        t = np.asarray(texture_rgb)[..., :3]
        if seam_uv is not None and len(seam_uv):
            s = t.shape[0]
            ij = np.clip((np.stack([1.0 - seam_uv[:, 1], seam_uv[:, 0]], axis=1) * s).astype(np.int64), 0, s - 1)
            seen = t[ij[:, 0], ij[:, 1]]
        else:
            flat = t.reshape(-1, 3)
            seen = flat[flat.max(axis=1) > 8]
        if len(seen):
            srgb = np.median(seen, axis=0) / 255.0
            lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
            colors["skin"] = (float(lin[0]), float(lin[1]), float(lin[2]))
            grey = float(lin @ np.array([0.2126, 0.7152, 0.0722]))
            scalp = SCALP_BRIGHTNESS * (grey + SCALP_SATURATION * (lin - grey))
            colors["scalp"] = (float(scalp[0]), float(scalp[1]), float(scalp[2]))
    return colors


def format_head_obj(head: Head, mtl_file: str) -> str:
    """OBJ text of the Basis with a ``usemtl`` group per part (polygons ordered by material)."""
    buf = io.StringIO()
    buf.write("# pix2vertex: full head from ICT-FaceKit (MIT) fitted to the reconstruction, metres\n")
    buf.write(f"mtllib {mtl_file}\no head\n")
    _rows(buf, "v %.6f %.6f %.6f", head.vertices * MM_TO_M)
    f, uv = head.faces, head.corner_uvs
    valid = f >= 0
    uniq, inv = _unique_rows_2d(np.round(uv[valid].astype(np.float64), 7))
    _rows(buf, "vt %.7f %.7f", uniq)
    vt = np.full(f.shape, -1, dtype=np.int64)
    vt[valid] = inv.ravel()
    buf.write("s 1\n")
    for m, name in enumerate(HEAD_MATERIALS):
        if (head.material == m).any():
            buf.write(f"usemtl {name}\n")
        for k in (3, 4):
            rows = (head.material == m) & (valid.sum(axis=1) == k)
            if not rows.any():
                continue
            cols = np.stack([f[rows][:, :k] + 1, vt[rows][:, :k] + 1], axis=2).reshape(int(rows.sum()), 2 * k)
            _rows(buf, "f " + " ".join(["%d/%d"] * k), cols)
    return buf.getvalue()


def _mtl(colors: dict[str, tuple[float, float, float]], texture: str | None) -> str:
    out = []
    for name in HEAD_MATERIALS:
        r, g, b = colors[name]
        out.append(f"newmtl {name}\nKa 1 1 1\nKd {r:.4f} {g:.4f} {b:.4f}\nKs 0 0 0\nNs 10\nillum 1\n")
        if name == "face" and texture:
            out.append(f"map_Kd {texture}\n")
    return "".join(out)


def write_head_files(folder: str | os.PathLike[str], head: Head, model: FaceModel,
                     texture_png: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write :data:`HEAD_FILES` into ``folder`` (the face material uses ``texture_png``, normally
    the result's ``texture.png`` beside it)."""
    from PIL import Image

    folder = Path(folder)
    tex_bytes, tex_rgb, tex_name = None, None, None
    if texture_png is not None and Path(texture_png).is_file():
        tex_bytes = Path(texture_png).read_bytes()
        tex_name = Path(texture_png).name
        with Image.open(texture_png) as im:
            tex_rgb = np.asarray(im.convert("RGB"))
    colors = material_colors(tex_rgb, seam_uvs(head))
    write_bytes_atomic(folder / "head.obj", format_head_obj(head, "head.mtl").encode("utf-8"))
    write_bytes_atomic(folder / "head.mtl", _mtl(colors, tex_name).encode("utf-8"))
    mats = [GltfMaterial(n, (*colors[n], 1.0), ROUGHNESS.get(n, 0.55), tex_bytes if n == "face" else None)
            for n in HEAD_MATERIALS]
    targets = {k: d * MM_TO_M for k, d in head.shape_keys.items()}
    write_glb(folder / "head.glb", head.vertices * MM_TO_M, head.faces, head.corner_uvs, head.material, mats,
              targets, name="head")
    doc = {
        "vertices": int(len(head.vertices)), "face_region_vertices": head.face_count,
        "fit_rms_mm": round(head.fit.rms_mm, 4),
        "identity_weights": [round(float(w), 5) for w in head.fit.identity],
        "expression_weights_ict": head.fit.expression_dict(model.expression_names, 0.0),
        "shape_keys": list(head.shape_keys),
        "arkit_from_ict": {a: list(s) for a, s in ARKIT_FROM_ICT},
        "photo_expression_key": PHOTO_EXPRESSION,
        "units": "metres, +y up, +z towards the viewer, head pose removed",
    }
    write_bytes_atomic(folder / "head.json", (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return [folder / n for n in HEAD_FILES]


def head_from_result(folder: str | os.PathLike[str], model: FaceModel | str | None = None,
                     arkit: bool = True) -> list[Path]:
    """Build and write the head of a finished result folder from its ``face_base.obj``."""
    folder = Path(folder)
    m = model if isinstance(model, FaceModel) else load_face_model(model)
    base = folder / "face_base.obj"
    if not base.is_file():
        raise FileNotFoundError(f"{folder} has no face_base.obj (not a pix2vertex result)")
    face_mm = read_obj_vertices(base) / MM_TO_M
    n = m.template.n_vertices
    if face_mm.shape != (n, 3):
        raise ValueError(f"{base} has {len(face_mm)} vertices, the face template has {n}")
    head = build_head(m, face_mm, arkit=arkit)
    return write_head_files(folder, head, m, folder / "texture.png")
