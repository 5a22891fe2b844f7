"""Headless preview renders (Workbench or Cycles) of a face object, written as PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path

import bpy
from mathutils import Vector

from ..core.atomic import atomic_file


def frame_camera(obj: bpy.types.Object, yaw_deg: float = 0.0, pitch_deg: float = 5.0,
                 lens_mm: float = 85.0, margin: float = 1.15) -> bpy.types.Object:
    """Add (or reuse) a scene camera looking at ``obj`` from the front (-y), turned by ``yaw_deg``
    about the object's vertical axis, at a distance that fits its bounding box."""
    scene = bpy.context.scene
    cam = scene.camera
    if cam is None:
        cam = bpy.data.objects.new("P2V Camera", bpy.data.cameras.new("P2V Camera"))
        scene.collection.objects.link(cam)
        scene.camera = cam
    cam.data.lens = lens_mm
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    centre = sum(corners, Vector()) / 8.0
    radius = max((c - centre).length for c in corners)
    fov = 2.0 * math.atan(cam.data.sensor_width / (2.0 * lens_mm))
    dist = margin * radius / math.sin(fov / 2.0)
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    direction = Vector((math.sin(yaw) * math.cos(pitch), -math.cos(yaw) * math.cos(pitch), math.sin(pitch)))
    cam.location = centre + dist * direction
    cam.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    return cam


def render_png(path: str | os.PathLike[str], engine: str = "BLENDER_WORKBENCH",
               resolution: tuple[int, int] = (512, 512), samples: int = 16,
               textured: bool = False) -> Path:
    """Render the scene's camera to ``path`` (PNG), written atomically."""
    scene = bpy.context.scene
    scene.render.engine = engine
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.film_transparent = False
    if scene.world is None:
        scene.world = bpy.data.worlds.new("P2V World")
    scene.world.color = (0.8, 0.8, 0.8)
    if engine == "BLENDER_WORKBENCH":
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.color_type = "TEXTURE" if textured else "MATERIAL"
        shading.show_cavity = True
        shading.cavity_type = "WORLD"
        scene.display.render_aa = "8"
    elif engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        scene.render.filepath = str(tmp)
        bpy.ops.render.render(write_still=True)
    return out
