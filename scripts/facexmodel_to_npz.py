"""Pack ICT-FaceKit's own ``FaceXModel/`` folder into the ``ict_facekit.npz`` the project reads.

    .venv/bin/python scripts/facexmodel_to_npz.py path/to/ICT-FaceKit/FaceXModel --out ict_facekit.npz

The folder (from https://github.com/ICT-VGL/ICT-FaceKit, MIT) holds ``generic_neutral_mesh.obj``,
``identity000.obj`` ... ``identity099.obj``, one OBJ per expression and ``vertex_indices.json``
(the expression list, the 68 landmark vertices, the rigid vertices). Every OBJ has the neutral
mesh's vertex order; the bases are each mesh minus the neutral one, in float32 as the OBJs give
them. The region ranges are ICT-FaceKit's (its README; :data:`REGIONS`). The arrays, their shapes
and dtypes are those of docs/reference/face_model_pack.md; the result is checked with the
add-on's own loader, then ``scripts/build_face_pack.py --source ict_facekit.npz`` makes the pack.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

import _bootstrap

_bootstrap.import_addon()

from pix2vertex_addon.core.atomic import atomic_file  # noqa: E402

# ICT-FaceKit's vertex regions (first, last vertex, inclusive) of the Face Model Light.
REGIONS = (
    ("face", 0, 9408), ("narrow_face", 0, 6705), ("head_and_neck", 9409, 11247),
    ("mouth_socket", 11248, 13293), ("eye_socket_left", 13294, 13677), ("eye_socket_right", 13678, 14061),
    ("gums_and_tongue", 14062, 17038), ("teeth", 17039, 21450), ("eyeball_left", 21451, 23020),
    ("eyeball_right", 23021, 24590), ("sclera_left", 21451, 22220), ("iris_left", 22221, 23020),
    ("sclera_right", 23021, 23790), ("iris_right", 23791, 24590), ("lacrimal_fluid_left", 24591, 24794),
    ("lacrimal_fluid_right", 24795, 24998), ("eye_blend_left", 24999, 25022), ("eye_blend_right", 25023, 25046),
    ("eye_occlusion_left", 25047, 25198), ("eye_occlusion_right", 25199, 25350),
    ("eyelashes_left", 25351, 26034), ("eyelashes_right", 26035, 26718),
)
NEUTRAL = "generic_neutral_mesh.obj"
CONFIG = "vertex_indices.json"


class ConvertError(ValueError):
    """The folder is not ICT-FaceKit's FaceXModel (one line for the user)."""


def read_vertices(path: Path) -> np.ndarray:
    """(V, 3) float32 of the ``v`` lines, in file order."""
    text = path.read_text(encoding="utf-8", errors="replace")
    rows = re.findall(r"^v\s+(\S+)\s+(\S+)\s+(\S+)", text, flags=re.M)
    if not rows:
        raise ConvertError(f"{path.name}: no vertices")
    return np.array(rows, dtype=np.float32)


def read_mesh(path: Path) -> dict[str, np.ndarray]:
    """Vertices, UVs, polygons (quads; triangles padded with -1), per-corner UV indices and the
    ``usemtl`` material of each polygon (names in order of first use)."""
    verts, uvs, faces, face_uvs, mats = [], [], [], [], []
    names: list[str] = []
    current = -1
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("v "):
            verts.append(line.split()[1:4])
        elif line.startswith("vt "):
            uvs.append(line.split()[1:3])
        elif line.startswith("usemtl "):
            name = line.split(maxsplit=1)[1].strip()
            if name not in names:
                names.append(name)
            current = names.index(name)
        elif line.startswith("f "):
            corners = line.split()[1:]
            if not 3 <= len(corners) <= 4:
                raise ConvertError(f"{path.name}: a polygon with {len(corners)} corners")
            vi, ti = [], []
            for c in corners:
                parts = c.split("/")
                vi.append(int(parts[0]) - 1)
                ti.append(int(parts[1]) - 1 if len(parts) > 1 and parts[1] else -1)
            pad = 4 - len(vi)
            faces.append(vi + [-1] * pad)
            face_uvs.append(ti + [-1] * pad)
            mats.append(max(current, 0))
    if not verts or not faces:
        raise ConvertError(f"{path.name}: not a mesh (no vertices or polygons)")
    return {
        "neutral_vertices": np.array(verts, dtype=np.float32),
        "faces": np.array(faces, dtype=np.int32),
        "uvs": np.array(uvs, dtype=np.float32).reshape(-1, 2),
        "face_uvs": np.array(face_uvs, dtype=np.int32),
        "face_material": np.array(mats, dtype=np.int16),
        "material_names": np.array(names or ["default"]),
    }


def convert(folder: Path, regions=REGIONS) -> dict[str, np.ndarray]:
    """The npz arrays from a FaceXModel folder (see the module docstring)."""
    folder = Path(folder)
    if not (folder / NEUTRAL).is_file() or not (folder / CONFIG).is_file():
        raise ConvertError(f"{folder} is not ICT-FaceKit's FaceXModel folder (no {NEUTRAL} or {CONFIG})")
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    for key in ("expressions", "idx_to_landmark_verts", "idx_to_rigid_verts"):
        if key not in config:
            raise ConvertError(f"{CONFIG} has no {key!r}")
    out = read_mesh(folder / NEUTRAL)
    neutral = out["neutral_vertices"]

    def basis(names: list[str]) -> np.ndarray:
        shapes = []
        for name in names:
            path = folder / f"{name}.obj"
            if not path.is_file():
                raise ConvertError(f"{path.name} is missing from {folder}")
            v = read_vertices(path)
            if v.shape != neutral.shape:
                raise ConvertError(f"{path.name} has {len(v)} vertices, the neutral mesh {len(neutral)}")
            shapes.append(v - neutral)
        return np.stack(shapes).astype(np.float32)

    identity_names = sorted(p.stem for p in folder.glob("identity[0-9][0-9][0-9].obj"))
    if not identity_names:
        raise ConvertError(f"no identity000.obj ... in {folder}")
    expression_names = [str(e) for e in config["expressions"]]
    out["identity_basis"] = basis(identity_names)
    out["identity_names"] = np.array(identity_names)
    out["expression_basis"] = basis(expression_names)
    out["expression_names"] = np.array(expression_names)
    out["landmarks_68"] = np.asarray(config["idx_to_landmark_verts"], dtype=np.int32)
    out["rigid_vertices"] = np.asarray(config["idx_to_rigid_verts"], dtype=np.int32)
    out["region_names"] = np.array([r[0] for r in regions])
    out["region_vertex_ranges"] = np.array([r[1:] for r in regions], dtype=np.int32)
    if int(out["region_vertex_ranges"].max()) >= len(neutral):
        raise ConvertError(f"the mesh has {len(neutral)} vertices, fewer than ICT-FaceKit's regions need")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="ICT-FaceKit's FaceXModel/ folder")
    ap.add_argument("--out", type=Path, default=Path("ict_facekit.npz"), help="the npz to write")
    a = ap.parse_args(argv)
    try:
        arrays = convert(a.folder)
    except (ConvertError, OSError, ValueError) as exc:
        print(f"[facexmodel_to_npz] {exc}", file=sys.stderr)
        return 2
    with atomic_file(a.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    from pix2vertex_addon.core.face_model import FaceModelError, load_face_model

    try:
        load_face_model(a.out)
    except FaceModelError as exc:
        print(f"[facexmodel_to_npz] wrote {a.out}, but the add-on does not accept it: {exc}", file=sys.stderr)
        return 1
    print(f"[facexmodel_to_npz] {a.out}: {len(arrays['neutral_vertices'])} vertices, "
          f"{len(arrays['identity_names'])} identity and {len(arrays['expression_names'])} expression shapes")
    return 0


if __name__ == "__main__":
    sys.exit(main(_bootstrap.script_argv()))
