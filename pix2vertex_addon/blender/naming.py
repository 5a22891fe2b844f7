"""Names and ownership of the datablocks a reconstruction adds (main thread only).

Every template object that receives a reconstruction gets a short random id
(``obj["p2v_uid"]``); each datablock made for it (material, images, textures, the target mesh
object and its mesh) carries the same id in ``["p2v_owner"]``. A re-run on the same object
first removes what that object owned, so the new datablocks take the same names instead of
Blender's ``.001`` copies, and nothing is left orphaned. Names come from the photo's name; a
short suffix from the object's id is added only when the plain name is taken by another
object's reconstruction (two photos called ``image.png`` from two folders), and the results
folder follows the same name, so two reconstructions never share files or datablocks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import bpy

UID_PROP = "p2v_uid"
OWNER_PROP = "p2v_owner"
NAME_PROP = "p2v_name"
IMAGE_EXTENSIONS = {"png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp", "exr", "hdr", "tga"}


def _collections() -> tuple[bpy.types.bpy_prop_collection, ...]:
    d = bpy.data
    return (d.objects, d.meshes, d.materials, d.images, d.textures)


def object_uid(obj: bpy.types.Object) -> str:
    """The object's reconstruction id, made (or remade, for a duplicated object that copied its
    original's id) on first use."""
    uid = str(obj.get(UID_PROP, ""))
    clash = uid and any(o is not obj and o.get(UID_PROP) == uid for o in bpy.data.objects)
    if not uid or clash:
        uid = uuid.uuid4().hex[:8]
        obj[UID_PROP] = uid
    return uid


def datablock_names(name: str) -> list[str]:
    """The names a reconstruction called ``name`` gives its datablocks (see ``apply.py``)."""
    return [name] + [f"p2v {kind} {name}" for kind in
                     ("Face", "Texture", "Texture Raw", "Normal", "Depth", "Correspondence", "Detail", "Target",
                      "Head", "Head Face")]


def _free_for(names: Iterable[str], obj: bpy.types.Object, uid: str) -> bool:
    for coll in _collections():
        for n in names:
            block = coll.get(n)
            if block is None or block is obj or block is obj.data:
                continue
            if block.get(OWNER_PROP) != uid:
                return False
    return True


def reconstruction_name(obj: bpy.types.Object, photo_name: str) -> str:
    """Name for the reconstruction of ``photo_name`` onto ``obj``: the photo's name (without its
    extension), with ``-<4 hex>`` from the object's id when another object's datablocks hold it."""
    uid = object_uid(obj)
    base, dot, ext = photo_name.rpartition(".")
    stem = base if dot and ext.lower() in IMAGE_EXTENSIONS else photo_name
    stem = stem.strip() or "face"
    for candidate in (stem, f"{stem}-{uid[:4]}", f"{stem}-{uid}"):
        if _free_for(datablock_names(candidate), obj, uid):
            return candidate
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def release(obj: bpy.types.Object) -> int:
    """Remove every datablock owned by ``obj``'s reconstruction (not the object or its mesh);
    returns how many were removed."""
    uid = object_uid(obj)
    removed = 0
    for coll in (bpy.data.objects, bpy.data.materials, bpy.data.textures, bpy.data.images, bpy.data.meshes):
        for block in [b for b in coll if b.get(OWNER_PROP) == uid and b is not obj and b is not obj.data]:
            coll.remove(block)
            removed += 1
    return removed


def claim(obj: bpy.types.Object, blocks: Iterable[bpy.types.ID]) -> None:
    """Mark ``blocks`` as owned by ``obj``'s reconstruction."""
    uid = object_uid(obj)
    for b in blocks:
        b[OWNER_PROP] = uid


def own_mesh(obj: bpy.types.Object) -> bpy.types.Mesh:
    """Give ``obj`` a mesh of its own when it shares one (a linked duplicate), so that the shape
    key and material of this reconstruction do not change the other objects."""
    if obj.data.users > 1:
        obj.data = obj.data.copy()
    return obj.data


def rename(obj: bpy.types.Object, name: str) -> None:
    """Name the object and its mesh ``name`` (the reconstruction's name)."""
    obj.name = name
    obj.data.name = name
    obj[NAME_PROP] = name
