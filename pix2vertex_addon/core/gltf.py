"""A small binary glTF 2.0 (``.glb``) writer with morph targets, and a reader (no ``bpy``).

One mesh, one node; one primitive per material, all sharing one vertex set (vertices are split
where their UVs differ, as glTF needs); the shape keys are morph targets (``POSITION`` deltas,
sparse accessors holding only the vertices a shape moves) named in ``mesh.extras.targetNames``, the convention Blender's importer and most engines read.
glTF's frame is the face model's (+y up, +z towards the viewer), in metres.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .layout_cache import LayoutCache, array_key

__all__ = ["GltfMaterial", "read_glb", "write_glb"]

_JSON, _BIN = 0x4E4F534A, 0x004E4942
_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


@dataclass(frozen=True)
class GltfMaterial:
    """A PBR material: base colour (linear RGBA), roughness, optional PNG texture (bytes)."""

    name: str
    color: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    roughness: float = 0.6
    texture_png: bytes | None = None


@dataclass
class _Bin:
    data: bytearray = field(default_factory=bytearray)
    views: list[dict] = field(default_factory=list)
    accessors: list[dict] = field(default_factory=list)

    def view(self, raw: bytes, target: int | None = None) -> int:
        while len(self.data) % 4:
            self.data.append(0)
        v: dict = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target is not None:
            v["target"] = target
        self.data.extend(raw)
        self.views.append(v)
        return len(self.views) - 1

    def accessor(self, a: np.ndarray, kind: str, target: int, minmax: bool = False) -> int:
        comp = _UINT if a.dtype == np.uint32 else _FLOAT
        acc: dict = {"bufferView": self.view(np.ascontiguousarray(a).tobytes(), target),
                     "componentType": comp, "count": int(a.shape[0]), "type": kind}
        if minmax:
            acc["min"] = [float(x) for x in np.atleast_1d(a.min(axis=0))]
            acc["max"] = [float(x) for x in np.atleast_1d(a.max(axis=0))]
        self.accessors.append(acc)
        return len(self.accessors) - 1


    def sparse_vec3(self, a: np.ndarray) -> int:
        """A VEC3 float accessor storing only the non-zero rows (morph targets are local)."""
        a = np.ascontiguousarray(a, dtype=np.float32)
        rows = np.flatnonzero((a != 0).any(axis=1))
        vals = a[rows]
        lo = vals.min(axis=0) if len(rows) else np.zeros(3)
        hi = vals.max(axis=0) if len(rows) else np.zeros(3)
        if len(rows) < len(a):  # the rows left out are zeros
            lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        acc: dict = {"componentType": _FLOAT, "count": int(a.shape[0]), "type": "VEC3",
                     "min": [float(x) for x in lo], "max": [float(x) for x in hi]}
        if len(rows):
            acc["sparse"] = {"count": int(len(rows)),
                             "indices": {"bufferView": self.view(rows.astype(np.uint32).tobytes()),
                                         "componentType": _UINT},
                             "values": {"bufferView": self.view(vals.tobytes())}}
        self.accessors.append(acc)
        return len(self.accessors) - 1


_SPLITS: LayoutCache[tuple[np.ndarray, np.ndarray, np.ndarray]] = LayoutCache("glTF vertex splits", 4)


def _split_vertices(faces: np.ndarray, corner_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangle corners -> (glTF vertex per corner (T, 3), source vertex (M,), uv (M, 2)); the
    same for every head made from one model, so it is kept per layout."""
    return _SPLITS.get(array_key(faces, corner_uvs), lambda: _split_vertices_uncached(faces, corner_uvs))


def _split_vertices_uncached(faces: np.ndarray, corner_uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    valid = faces >= 0
    key_uv = np.round(np.nan_to_num(corner_uvs, nan=-1.0) * 1e6).astype(np.int64)
    keys = np.stack([np.where(valid, faces, -1), key_uv[..., 0], key_uv[..., 1]], axis=-1)
    uniq, inv = np.unique(keys[valid].reshape(-1, 3), axis=0, return_inverse=True)
    ids = np.full(faces.shape, -1, dtype=np.int64)
    ids[valid] = inv.ravel()
    src = uniq[:, 0]
    uv = np.zeros((len(uniq), 2))
    uv[inv.ravel()] = np.nan_to_num(corner_uvs[valid])
    return ids, src, uv


def write_glb(path: str | os.PathLike[str], vertices_m: np.ndarray, faces: np.ndarray, corner_uvs: np.ndarray,
              material: np.ndarray, materials: list[GltfMaterial], morph_targets: dict[str, np.ndarray] | None = None,
              name: str = "head") -> Path:
    """Write a ``.glb`` atomically (temporary file, then rename).

    vertices_m : (V, 3) metres, glTF axes. faces : (F, 3|4) polygons (-1 pads triangles).
    corner_uvs : (F, k, 2) UV per corner (Blender's convention, v up). material : (F,) index into
    ``materials``. morph_targets : name -> (V, 3) deltas in metres (the shape keys).
    """
    from .geometry.laplacian import vertex_normals

    v = np.asarray(vertices_m, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    mat = np.asarray(material, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
        raise ValueError(f"vertices must be finite (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] not in (3, 4) or f.max() >= len(v) or (f[:, :3] < 0).any():
        raise ValueError(f"faces must be (F, 3|4) indices into {len(v)} vertices")
    if mat.shape != (len(f),) or mat.min() < 0 or mat.max() >= len(materials):
        raise ValueError("material must give each polygon an index into materials")
    ids, src, uv = _split_vertices(f, np.asarray(corner_uvs, dtype=np.float64))
    tri_src = np.concatenate([f[:, [0, 1, 2]], f[f[:, -1] >= 0][:, [0, 2, 3]]]) if f.shape[1] == 4 else f
    tri_ids = np.concatenate([ids[:, [0, 1, 2]], ids[f[:, -1] >= 0][:, [0, 2, 3]]]) if f.shape[1] == 4 else ids
    tri_mat = np.concatenate([mat, mat[f[:, -1] >= 0]]) if f.shape[1] == 4 else mat
    normals = vertex_normals(v, tri_src)[src]

    b = _Bin()
    attrs = {
        "POSITION": b.accessor(v[src].astype(np.float32), "VEC3", _ARRAY_BUFFER, minmax=True),
        "NORMAL": b.accessor(normals.astype(np.float32), "VEC3", _ARRAY_BUFFER),
        "TEXCOORD_0": b.accessor(np.c_[uv[:, 0], 1.0 - uv[:, 1]].astype(np.float32), "VEC2", _ARRAY_BUFFER),
    }
    names = list(morph_targets or {})
    targets = []
    for n in names:
        d = np.asarray(morph_targets[n], dtype=np.float64)  # type: ignore[index]
        if d.shape != v.shape:
            raise ValueError(f"morph target {n!r} must be {v.shape}, got {d.shape}")
        targets.append({"POSITION": b.sparse_vec3(d[src])})
    gl_materials, images, textures = [], [], []
    for m in materials:
        pbr: dict = {"baseColorFactor": list(m.color), "metallicFactor": 0.0, "roughnessFactor": m.roughness}
        if m.texture_png is not None:
            images.append({"bufferView": b.view(m.texture_png), "mimeType": "image/png"})
            textures.append({"source": len(images) - 1, "sampler": 0})
            pbr["baseColorTexture"] = {"index": len(textures) - 1}
            pbr["baseColorFactor"] = [1.0, 1.0, 1.0, 1.0]
        gl_materials.append({"name": m.name, "pbrMetallicRoughness": pbr})
    primitives = []
    for k in range(len(materials)):
        sel = tri_ids[tri_mat == k]
        if not len(sel):
            continue
        prim: dict = {"attributes": attrs, "mode": 4, "material": k,
                      "indices": b.accessor(sel.astype(np.uint32).ravel(), "SCALAR", _ELEMENT_ARRAY_BUFFER)}
        if targets:
            prim["targets"] = targets
        primitives.append(prim)
    mesh: dict = {"name": name, "primitives": primitives}
    if names:
        mesh["weights"] = [0.0] * len(names)
        mesh["extras"] = {"targetNames": names}
    doc: dict = {
        "asset": {"version": "2.0", "generator": "pix2vertex core.gltf"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": name}], "meshes": [mesh],
        "materials": gl_materials, "accessors": b.accessors, "bufferViews": b.views,
        "buffers": [{"byteLength": 0}],
    }
    if images:
        doc["images"], doc["textures"] = images, textures
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
    while len(b.data) % 4:
        b.data.append(0)
    doc["buffers"][0]["byteLength"] = len(b.data)
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.data)
    out = Path(path)
    with atomic_file(out) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<4sII", b"glTF", 2, total))
        fh.write(struct.pack("<II", len(js), _JSON) + js)
        fh.write(struct.pack("<II", len(b.data), _BIN) + bytes(b.data))
    return out


def read_glb(path: str | os.PathLike[str]) -> tuple[dict, list[np.ndarray]]:
    """(the JSON document, every accessor as an array) of a ``.glb`` (sparse accessors filled in)."""
    raw = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<4sII", raw, 0)
    if magic != b"glTF" or version != 2 or total != len(raw):
        raise ValueError(f"{path} is not a binary glTF 2.0 file")
    n, kind = struct.unpack_from("<II", raw, 12)
    if kind != _JSON:
        raise ValueError(f"{path}: the first chunk is not JSON")
    doc = json.loads(raw[20:20 + n])
    off = 20 + n
    m, kind = struct.unpack_from("<II", raw, off)
    blob = raw[off + 8:off + 8 + m]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
    arrays = []
    def read(view_index: int, dtype: type, count: int, offset: int = 0) -> np.ndarray:
        view = doc["bufferViews"][view_index]
        return np.frombuffer(blob, dtype=dtype, count=count, offset=view.get("byteOffset", 0) + offset)

    for acc in doc["accessors"]:
        dtype = np.uint32 if acc["componentType"] == _UINT else np.float32
        k = width[acc["type"]]
        if "bufferView" in acc:
            a = read(acc["bufferView"], dtype, acc["count"] * k, acc.get("byteOffset", 0)).reshape(acc["count"], k)
        else:
            a = np.zeros((acc["count"], k), dtype=dtype)
        if "sparse" in acc:
            sp_ = acc["sparse"]
            a = a.copy()
            rows = read(sp_["indices"]["bufferView"], np.uint32, sp_["count"], sp_["indices"].get("byteOffset", 0))
            a[rows] = read(sp_["values"]["bufferView"], dtype, sp_["count"] * k,
                           sp_["values"].get("byteOffset", 0)).reshape(-1, k)
        arrays.append(a if k > 1 else a.ravel())
    return doc, arrays
