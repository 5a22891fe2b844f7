"""Before/after figure of the texture clean-up on real photos and composites, headless.

    .venv/bin/python scripts/texture_figures.py [--out docs/texture_cleanup.png]
    blender -b -P scripts/texture_figures.py -- [--out ...]

One row per photo (scikit-image's astronaut; the astronaut with a hair fringe composited over the
forehead; Grace Hopper with glasses composited, tests/composites.py): the networks' crop and
mask, the textured reconstruction from the front and turned 40 degrees with the raw projection
(``texture_raw.png``, "before") and with the cleaned texture (``texture.png``, "after"), both
Workbench renders of ``face_base.obj``, the two UV textures, and the full head (the add-on's
Blender head with the cleaned texture, its skin and scalp parts) at 0, 40 and 90 degrees.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, import_addon, script_argv  # noqa: E402


def inputs():
    sys.path.insert(0, str(REPO / "tests"))
    from composites import glasses, hair_fringe

    from pix2vertex_addon.core.detect import FaceDetector
    from pix2vertex_addon.core.images import load_image

    from photos import photo_paths

    paths = photo_paths()
    astro, _ = load_image(paths["astronaut"])
    hopper, _ = load_image(paths["grace_hopper"])
    det = FaceDetector()
    lm_a = det.detect(astro)[0].landmarks_68
    lm_h = det.detect(hopper)[0].landmarks_68
    det.close()
    return {"astronaut": astro, "astronaut + fringe": hair_fringe(astro, lm_a),
            "Grace Hopper + glasses": glasses(hopper, lm_h)}


def renders(result: Path, texture: str, size: int, tmp: Path):
    import bpy
    from PIL import Image

    from pix2vertex_addon.blender.render import frame_camera, render_png

    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.obj_import(filepath=str(result / "face_base.obj"))
    obj = bpy.context.selected_objects[0]
    bpy.ops.object.shade_smooth()
    img = bpy.data.images.load(str(result / texture))
    for node in obj.active_material.node_tree.nodes:
        if node.type == "TEX_IMAGE" and node.image is not None and node.image.colorspace_settings.name != "Non-Color":
            node.image = img
    tiles = []
    for k, yaw in enumerate((0.0, 40.0)):
        frame_camera(obj, yaw_deg=yaw, pitch_deg=0.0, margin=1.05)
        png = render_png(tmp / f"{texture}{k}.png", resolution=(size, size), textured=True)
        tiles.append(Image.open(png).convert("RGB"))
    return tiles


def head_renders(result: Path, size: int, tmp: Path, model):
    import bpy
    from PIL import Image

    from pix2vertex_addon.blender.head import add_head_object
    from pix2vertex_addon.blender.render import frame_camera, render_png
    from pix2vertex_addon.core.head import build_head
    from pix2vertex_addon.core.head_files import MM_TO_M, read_obj_vertices

    head = build_head(model, read_obj_vertices(result / "face_base.obj") / MM_TO_M, arkit=False)
    bpy.ops.wm.read_homefile(use_empty=True)
    obj = add_head_object(bpy.context, head, result.name, result / "texture.png")
    tiles = []
    for k, yaw in enumerate((0.0, 40.0, 90.0)):
        frame_camera(obj, yaw_deg=yaw, pitch_deg=5.0, margin=1.05)
        png = render_png(tmp / f"head{k}.png", resolution=(size, size), textured=True)
        tiles.append(Image.open(png).convert("RGB"))
    return tiles


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "docs" / "texture_cleanup.png"))
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    import_addon()
    import numpy as np
    from PIL import Image, ImageDraw

    from pix2vertex_addon.core.images import save_png_atomic
    from pix2vertex_addon.core.pipeline import Pipeline
    from pix2vertex_addon.core.results import write_result

    s = args.size
    pipe = Pipeline()
    rows = []
    header = ["crop", "mask", "before", "before 40°", "after", "after 40°", "raw texture", "clean texture",
              "full head", "head 40°", "head 90°"]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name, rgb in inputs().items():
            rec = pipe.reconstruct(rgb)[0]
            res = write_result(tmp / name.replace(" ", "_"), rgb, rec, pipe.model.template, overwrite=True)
            crop = Image.fromarray(rec.crop).resize((s, s))
            mask = Image.fromarray((rec.maps["mask"] * 255).astype(np.uint8)).convert("RGB").resize((s, s))
            tiles = [crop, mask, *renders(res, "texture_raw.png", s, tmp), *renders(res, "texture.png", s, tmp),
                     Image.open(res / "texture_raw.png").convert("RGB").resize((s, s)),
                     Image.open(res / "texture.png").convert("RGB").resize((s, s)),
                     *head_renders(res, s, tmp, pipe.model)]
            row = Image.new("RGB", (s * len(tiles), s + 18), (255, 255, 255))
            ImageDraw.Draw(row).text((4, 2), name, fill=(0, 0, 0))
            for k, tile in enumerate(tiles):
                row.paste(tile, (k * s, 18))
            rows.append(row)
    head = Image.new("RGB", (s * len(header), 18), (255, 255, 255))
    for k, h in enumerate(header):
        ImageDraw.Draw(head).text((k * s + 4, 2), h, fill=(0, 0, 0))
    sheet = Image.new("RGB", (rows[0].width, 18 + sum(r.height for r in rows)), (255, 255, 255))
    sheet.paste(head, (0, 0))
    y = 18
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png_atomic(out, np.asarray(sheet))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(script_argv()))
