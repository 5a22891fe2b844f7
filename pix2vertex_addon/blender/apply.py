"""Put a reconstruction into the scene (main thread only).

The template object is warped in place: same object, vertex order and UVs. Its original shape
stays the ``Basis`` shape key and the reconstruction becomes the shape key
``p2v Reconstruction`` (value 1), so the user can blend between them. The photo's projected
texture becomes the object's material, the predicted depth and correspondence maps become
images, and the fine detail is a non-destructive modifier stack (Simple subdivision, then a
Displace modifier reading the detail field baked into a UV texture).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..core.face_model import MODEL_TO_BLENDER

SHAPE_KEY = "p2v Reconstruction"
SUBDIV_MOD = "p2v Subdivision"
DISPLACE_MOD = "p2v Detail"
NORMAL_NODE = "p2v Normal Map"
RANGE_PROP = "p2v_detail_range_mm"
DETAIL_TEXTURE_SIZE = 2048
MM_TO_M = 0.001


def model_mm_to_blender(points_mm: np.ndarray) -> np.ndarray:
    """(N, 3) model frame (mm) -> Blender frame (metres)."""
    return (np.asarray(points_mm, dtype=np.float64) * MM_TO_M) @ MODEL_TO_BLENDER.T


def _float_image(name: str, rgba: np.ndarray, bottom_up: bool = False) -> bpy.types.Image:
    """A packed float image from (H, W, 4) top-down pixels (Blender stores bottom-up; with
    ``bottom_up`` they are already in Blender's order, float32 and contiguous: no copy)."""
    h, w = rgba.shape[:2]
    old = bpy.data.images.get(name)
    if old is not None:
        bpy.data.images.remove(old)
    img = bpy.data.images.new(name, width=w, height=h, alpha=True, float_buffer=True, is_data=True)
    img.colorspace_settings.name = "Non-Color"
    img.pixels.foreach_set(np.ascontiguousarray(rgba if bottom_up else rgba[::-1], dtype=np.float32).ravel())
    img.pack()
    return img


def set_reconstruction_shape(obj: bpy.types.Object, vertices_blender: np.ndarray) -> bpy.types.ShapeKey:
    """Keep the current shape as ``Basis`` and store ``vertices_blender`` (V, 3) as the
    ``p2v Reconstruction`` shape key at value 1."""
    mesh = obj.data
    if mesh.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    key = mesh.shape_keys.key_blocks.get(SHAPE_KEY)
    if key is None:
        key = obj.shape_key_add(name=SHAPE_KEY, from_mix=False)
    key.data.foreach_set("co", np.ascontiguousarray(vertices_blender, dtype=np.float32).ravel())
    key.slider_min, key.slider_max = 0.0, 1.0
    key.value = 1.0
    obj.active_shape_key_index = list(mesh.shape_keys.key_blocks).index(key)
    mesh.update()
    return key


def set_texture_material(obj: bpy.types.Object, texture_png: Path, name: str) -> bpy.types.Material:
    """A Principled material showing ``texture_png`` through the template's UVs (image packed)."""
    img = bpy.data.images.load(str(texture_png), check_existing=False)
    img.name = f"p2v Texture {name}"
    img.pack()
    mat = bpy.data.materials.new(f"p2v Face {name}")
    if mat.node_tree is None:  # Blender < 5: node trees are opt-in
        mat.use_nodes = True
    nt = mat.node_tree
    bsdf = next(n for n in nt.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = 0.55
    tex = nt.nodes.new("ShaderNodeTexImage")
    tex.image = img
    tex.location = (bsdf.location.x - 320, bsdf.location.y)
    nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    if obj.data.materials:
        obj.data.materials[0] = mat
    else:
        obj.data.materials.append(mat)
    return mat


def add_texture_layers(mat: bpy.types.Material, result_dir: Path, name: str, strength: float) -> list[bpy.types.Image]:
    """The detail's tangent-space normal map (``normal.png``) through a Normal Map node into the
    material's normal, and the raw projection (``texture_raw.png``) as an unconnected image node
    for artists; both packed. Returns the two images."""
    nt = mat.node_tree
    bsdf = next(n for n in nt.nodes if n.type == "BSDF_PRINCIPLED")
    images = []
    for file, label, loc in (("normal.png", "Normal", -620), ("texture_raw.png", "Texture Raw", 280)):
        path = Path(result_dir) / file
        if not path.is_file():
            continue
        img = bpy.data.images.load(str(path), check_existing=False)
        img.name = f"p2v {label} {name}"
        if file == "normal.png":
            img.colorspace_settings.name = "Non-Color"
        img.pack()
        node = nt.nodes.new("ShaderNodeTexImage")
        node.image, node.label = img, f"p2v {label}"
        node.location = (bsdf.location.x + loc, bsdf.location.y - 320)
        images.append(img)
        if file == "normal.png":
            nmap = nt.nodes.new("ShaderNodeNormalMap")
            nmap.name = nmap.label = NORMAL_NODE
            nmap.space = "TANGENT"
            nmap.inputs["Strength"].default_value = strength
            nmap.location = (bsdf.location.x - 320, bsdf.location.y - 320)
            nt.links.new(node.outputs["Color"], nmap.inputs["Color"])
            nt.links.new(nmap.outputs["Normal"], bsdf.inputs["Normal"])
    return images


def add_map_images(rec, name: str) -> list[bpy.types.Image]:
    """The networks' depth (mm, label frame z; 0 off the face) and correspondence maps as images."""
    m = rec.maps["mask"] >= 0.5
    z = np.where(m, rec.maps["xyz"][..., 2], 0.0)
    r = z.shape[0]
    depth = np.ones((r, r, 4), dtype=np.float32)
    depth[..., :3] = z[..., None]
    corr = np.ones((r, r, 4), dtype=np.float32)
    corr[..., :3] = rec.maps["corr"] * m[..., None]
    images = [_float_image(f"p2v Depth {name}", depth), _float_image(f"p2v Correspondence {name}", corr)]
    for img in images:
        img.use_fake_user = True  # nothing uses them: kept when the file is saved, removed on a re-run
    return images


def add_target_object(context: bpy.types.Context, obj: bpy.types.Object, rec, name: str) -> bpy.types.Object:
    """The networks' per-pixel mesh, posed like the warped template, as its own object."""
    t = rec.target
    v = model_mm_to_blender(rec.to_model(t.vertices)).astype(np.float32)
    f = np.asarray(t.faces, dtype=np.int32)
    mesh = bpy.data.meshes.new(f"p2v Target {name}")
    mesh.vertices.add(len(v))
    mesh.loops.add(f.size)
    mesh.polygons.add(len(f))
    mesh.vertices.foreach_set("co", v.ravel())
    mesh.loops.foreach_set("vertex_index", f.ravel())
    mesh.polygons.foreach_set("loop_start", np.arange(0, f.size, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    tgt = bpy.data.objects.new(mesh.name, mesh)
    (obj.users_collection[0] if obj.users_collection else context.collection).objects.link(tgt)
    tgt.matrix_world = obj.matrix_world.copy()
    return tgt


def set_detail(obj: bpy.types.Object, rec, template, name: str, enabled: bool, strength: float) -> None:
    """Bake the detail field into a UV texture and set up Subdivision + Displace modifiers."""
    from ..core.geometry import subdivide_corner_uvs
    from ..core.projection import bake_vertex_field

    d = rec.detail
    uv = subdivide_corner_uvs(template.faces, template.uvs, rec.detail_levels)
    field = bake_vertex_field(d.displacement, d.faces, uv, size=DETAIL_TEXTURE_SIZE)
    rng = float(max(np.abs(d.displacement).max(), 1e-6))
    rgba = np.empty(field.shape + (4,), dtype=np.float32)  # bottom-up, as Blender stores images
    rgba[..., 3] = 1.0
    rgba[..., :3] = (np.float32(0.5) + field[::-1] * np.float32(0.5 / rng))[..., None]  # 0.5 = no displacement
    img = _float_image(f"p2v Detail {name}", rgba, bottom_up=True)
    tex = bpy.data.textures.get(f"p2v Detail {name}") or bpy.data.textures.new(f"p2v Detail {name}", "IMAGE")
    tex.image = img
    tex.extension = "EXTEND"
    tex.use_interpolation = True
    obj[RANGE_PROP] = rng
    sub = obj.modifiers.get(SUBDIV_MOD) or obj.modifiers.new(SUBDIV_MOD, "SUBSURF")
    sub.subdivision_type = "SIMPLE"
    sub.levels = sub.render_levels = rec.detail_levels
    sub.uv_smooth = "NONE"
    disp = obj.modifiers.get(DISPLACE_MOD) or obj.modifiers.new(DISPLACE_MOD, "DISPLACE")
    disp.texture = tex
    disp.texture_coords = "UV"
    disp.uv_layer = obj.data.uv_layers[0].name
    disp.direction = "NORMAL"
    disp.mid_level = 0.5
    update_detail_modifiers(obj, enabled, strength)


def update_detail_modifiers(obj: bpy.types.Object, enabled: bool, strength: float) -> None:
    """Show/hide the detail stack and set its strength (1 = as reconstructed)."""
    rng = float(obj.get(RANGE_PROP, 0.0))
    for name in (SUBDIV_MOD, DISPLACE_MOD):
        mod = obj.modifiers.get(name)
        if mod is not None:
            mod.show_viewport = mod.show_render = enabled
    disp = obj.modifiers.get(DISPLACE_MOD)
    if disp is not None:
        disp.strength = 2.0 * rng * MM_TO_M * strength
    # the normal map carries the detail when the modifier stack does not (no double shading)
    mat = obj.active_material
    node = mat.node_tree.nodes.get(NORMAL_NODE) if mat is not None and mat.node_tree else None
    if node is not None:
        node.inputs["Strength"].default_value = 0.0 if enabled and disp is not None else strength
    # a full head made from this template has no modifier stack: its normal map is always on
    from .head import HEAD_OF_PROP

    for head in (o for o in bpy.data.objects if o.get(HEAD_OF_PROP) == obj.name and o.data.materials):
        hmat = head.data.materials[0]
        hnode = hmat.node_tree.nodes.get(NORMAL_NODE) if hmat is not None and hmat.node_tree else None
        if hnode is not None:
            hnode.inputs["Strength"].default_value = strength


def apply_reconstruction(context: bpy.types.Context, obj: bpy.types.Object, rec, template, result_dir: Path,
                         name: str, use_detail: bool = True, detail_strength: float = 1.0,
                         add_target_mesh: bool = False) -> dict:
    """Everything above, in one go, on ``obj`` (which must have the template's topology):
    ``use_detail``/``detail_strength`` set the detail stack and normal map, ``add_target_mesh``
    also adds the networks' per-pixel mesh as an object."""
    from . import naming

    naming.own_mesh(obj)
    naming.release(obj)  # this object's previous reconstruction: replaced, not copied
    naming.rename(obj, name)
    verts = model_mm_to_blender(rec.vertices_model)
    set_reconstruction_shape(obj, verts)
    mat = set_texture_material(obj, Path(result_dir) / "texture.png", name)
    layers = add_texture_layers(mat, Path(result_dir), name, detail_strength)
    images = add_map_images(rec, name)
    if rec.detail is not None:
        set_detail(obj, rec, template, name, use_detail, detail_strength)
    else:
        update_detail_modifiers(obj, False, detail_strength)
    target = add_target_object(context, obj, rec, name) if add_target_mesh else None
    owned: list = [mat, *layers, *images, *(n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE")]
    owned += [b for b in (bpy.data.images.get(f"p2v Detail {name}"), bpy.data.textures.get(f"p2v Detail {name}"))
              if b is not None and rec.detail is not None]
    if target is not None:
        owned += [target, target.data]
    naming.claim(obj, owned)
    obj["p2v_source"] = name
    obj["p2v_results"] = str(result_dir)
    return {"images": [i.name for i in images], "target": target.name if target else None}


def apply_detail(context: bpy.types.Context, obj: bpy.types.Object) -> bpy.types.Mesh:
    """Bake the current shape (shape-key mix) and the detail modifiers into a new mesh for ``obj``."""
    depsgraph = context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    new = bpy.data.meshes.new_from_object(evaluated, preserve_all_data_layers=True, depsgraph=depsgraph)
    old = obj.data
    new.name = old.name
    obj.modifiers.remove(obj.modifiers[DISPLACE_MOD])
    if SUBDIV_MOD in obj.modifiers:
        obj.modifiers.remove(obj.modifiers[SUBDIV_MOD])
    obj.data = new
    if old.users == 0:
        bpy.data.meshes.remove(old)
    return new
