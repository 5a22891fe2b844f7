"""The full head in the scene (main thread only): one object with the photo-textured face, the
back of the head, eyes and teeth, each part its own material; shape keys ``Basis`` (the person
with a neutral face), ``Photo expression`` (value 1: the photo's expression) and the ARKit
blendshapes by ARKit's names (value 0)."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..core.head import HEAD_MATERIALS, PHOTO_EXPRESSION, Head
from ..core.head_files import ROUGHNESS, material_colors, seam_uvs
from .apply import model_mm_to_blender, set_texture_material
from .mesh import polygon_mesh

HEAD_PROP = "p2v_head"
HEAD_OF_PROP = "p2v_head_of"  # the template the head was made from


def _plain_material(name: str, color: tuple[float, float, float], roughness: float) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5: node trees are opt-in
        mat.use_nodes = True
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    mat.diffuse_color = (*color, 1.0)  # Workbench and the viewport's solid mode
    return mat


def add_head_object(context: bpy.types.Context, head: Head, name: str, texture_png: Path | None,
                    like: bpy.types.Object | None = None,
                    face_material: bpy.types.Material | None = None) -> bpy.types.Object:
    """A new object for ``head`` (placed like ``like``, normally the warped template); a head
    made earlier from the same template is replaced.

    face_material : the template's photo material (texture, normal map, raw texture): the head's
        face part gets a copy of it with the normal map always on (the head has no Displace
        stack), sharing its images. Without it, ``texture_png`` makes a plain textured material.
    With ``like``, every datablock made here is owned by ``like``'s reconstruction
    (``naming.claim``), so a re-run replaces it instead of leaving ``.001`` copies."""
    from . import naming
    from .apply import NORMAL_NODE

    if like is not None:
        for old in [o for o in bpy.data.objects if o.get(HEAD_OF_PROP) == like.name]:
            mesh_old = old.data
            bpy.data.objects.remove(old)
            if mesh_old.users == 0:
                bpy.data.meshes.remove(mesh_old)
    basis = model_mm_to_blender(head.vertices)
    mesh = polygon_mesh(f"p2v Head {name}", basis, head.faces, head.corner_uvs)
    obj = bpy.data.objects.new(mesh.name, mesh)
    collection = like.users_collection[0] if like is not None and like.users_collection else context.collection
    collection.objects.link(obj)
    if like is not None:
        obj.matrix_world = like.matrix_world.copy()
    tex_rgb = None
    made: list = [obj, mesh]
    if texture_png is not None and Path(texture_png).is_file():
        from PIL import Image

        with Image.open(texture_png) as im:
            tex_rgb = np.asarray(im.convert("RGB"))
    if face_material is not None:
        mat = face_material.copy()
        mat.name = f"p2v Head Face {name}"
        node = mat.node_tree.nodes.get(NORMAL_NODE) if mat.node_tree else None
        if node is not None:
            node.mute = False
        mesh.materials.append(mat)
        made.append(mat)
    elif tex_rgb is not None:
        made.append(set_texture_material(obj, Path(texture_png), f"Head {name}"))
        made += [n.image for n in obj.active_material.node_tree.nodes if n.type == "TEX_IMAGE"]
    else:
        mesh.materials.append(_plain_material(f"p2v Head Face {name}", (0.6, 0.45, 0.4), 0.55))
        made.append(mesh.materials[0])
    colors = material_colors(tex_rgb, seam_uvs(head))
    for part in HEAD_MATERIALS[1:]:
        mesh.materials.append(_plain_material(f"p2v {part} {name}", colors[part], ROUGHNESS.get(part, 0.55)))
        made.append(mesh.materials[-1])
    mesh.polygons.foreach_set("material_index", head.material.astype(np.int32))
    obj.shape_key_add(name="Basis", from_mix=False)
    for key_name, delta in head.shape_keys.items():
        key = obj.shape_key_add(name=key_name, from_mix=False)
        key.data.foreach_set("co", (basis + model_mm_to_blender(delta)).astype(np.float32).ravel())
        key.slider_min, key.slider_max = 0.0, 1.0
        key.value = 1.0 if key_name == PHOTO_EXPRESSION else 0.0
    mesh.update()
    obj[HEAD_PROP] = name
    if like is not None:
        obj[HEAD_OF_PROP] = like.name
        naming.claim(like, made)
    return obj


def hide_face_only(obj: bpy.types.Object) -> None:
    """Hide the warped template (the head replaces it in the viewport and in renders)."""
    obj.hide_set(True)
    obj.hide_render = True
