"""Make the figures in docs/ from real photos that ship in our dependencies, headless.

    .venv/bin/python scripts/make_figures.py [--out docs]
    blender -b -P scripts/make_figures.py -- [--out docs]

Writes
* ``docs/real_photos.png``: per photo (astronaut, Grace Hopper, cameraman) one row: the photo
  with the projected landmarks, the textured reconstruction from the front and turned 40 degrees
  (Workbench), and the networks' maps (crop, depth, normals, correspondence, mask);
* ``docs/blender_scene.png``: the Blender scene after "Reconstruct" on the astronaut (warped
  template with texture and detail modifiers), rendered with Cycles.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, import_addon, script_argv  # noqa: E402


def real_photos_sheet(out: Path, tmp: Path, size: int = 320) -> Path:
    import bpy
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(REPO / "tests"))
    from pix2vertex_addon.blender.render import frame_camera, render_png
    from pix2vertex_addon.core.images import load_image
    from pix2vertex_addon.core.pipeline import Pipeline
    from pix2vertex_addon.core.results import write_result

    from photos import photo_paths

    pipeline = Pipeline()
    rows = []
    for name, path in photo_paths().items():
        rgb, _ = load_image(path)
        rec = pipeline.reconstruct(rgb)[0]
        res = write_result(tmp / name, rgb, rec, pipeline.model.template, overwrite=True)
        import json

        lm = json.loads((res / "landmarks.json").read_text())["landmarks_68"]
        photo = Image.fromarray(rgb)
        d = ImageDraw.Draw(photo)
        r = max(2, photo.width // 200)
        for x, y in lm:
            d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 40, 40))
        photo.thumbnail((size, size))
        cell = Image.new("RGB", (size, size), (255, 255, 255))  # one column width for every row
        cell.paste(photo, ((size - photo.width) // 2, (size - photo.height) // 2))
        tiles = [cell]
        bpy.ops.wm.read_homefile(use_empty=True)
        bpy.ops.wm.obj_import(filepath=str(res / "face.obj"))
        obj = bpy.context.selected_objects[0]
        for yaw in (0.0, 40.0):
            frame_camera(obj, yaw_deg=yaw, pitch_deg=0.0, margin=1.0)
            png = render_png(tmp / f"{name}_{int(yaw)}.png", resolution=(size, size), textured=True)
            tiles.append(Image.open(png).convert("RGB"))
        maps = Image.open(res / "maps.png").convert("RGB")
        maps = maps.resize((size * maps.width // maps.height, size))
        tiles.append(maps)
        rows.append(tiles)
    width = max(sum(t.width for t in row) for row in rows)
    sheet = Image.new("RGB", (width, size * len(rows)), (255, 255, 255))
    for i, row in enumerate(rows):
        x = 0
        for t in row:
            sheet.paste(t, (x, i * size + (size - t.height) // 2))
            x += t.width
    path = out / "real_photos.png"
    sheet.save(path)
    return path


def blender_scene(out: Path, tmp: Path) -> Path:
    import bpy

    sys.path.insert(0, str(REPO / "tests"))
    import pix2vertex_addon
    from pix2vertex_addon.blender.render import frame_camera, render_png

    from photos import photo_paths

    bpy.ops.wm.read_homefile(use_empty=True)
    pix2vertex_addon.register()
    try:
        bpy.ops.p2v.add_template()
        s = bpy.context.scene.p2v
        s.image_path = str(photo_paths()["astronaut"])
        s.output_dir = str(tmp / "scene")
        assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
        obj = s.template
        sun = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "AREA"))
        sun.data.energy = 60.0
        sun.data.size = 0.5
        sun.location = (0.4, -0.6, 0.5)
        sun.rotation_euler = (0.9, 0.0, 0.55)
        bpy.context.scene.collection.objects.link(sun)
        frame_camera(obj, yaw_deg=25.0, pitch_deg=3.0, margin=1.0)
        path = render_png(out / "blender_scene.png", engine="CYCLES", resolution=(640, 640), samples=24)
    finally:
        pix2vertex_addon.unregister()
    return path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "docs"))
    ap.add_argument("--only", choices=["photos", "scene"], default=None)
    args = ap.parse_args(argv)
    import_addon()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "photos"):
            print("wrote", real_photos_sheet(out, Path(tmp)))
        if args.only in (None, "scene"):
            print("wrote", blender_scene(out, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main(script_argv()))
