"""Render a reconstruction's face.obj (textured) headless from several angles into one PNG.

    blender -b -P scripts/render_result.py -- RESULT_DIR [--output x.png] [--yaw 0 35] [--photo PHOTO]
    python scripts/render_result.py RESULT_DIR ...                      (bpy module)

With --photo, the photo with the projected landmarks (landmarks.json) is put first in the row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import import_addon, script_argv  # noqa: E402


def landmarks_overlay(photo: Path, landmarks: list, size: int):
    from PIL import Image, ImageDraw, ImageOps

    img = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
    d = ImageDraw.Draw(img)
    r = max(2, img.width // 250)
    for x, y in landmarks:
        d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 40, 40))
    img.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", help="a result folder (with face.obj)")
    ap.add_argument("--output", default=None, help="PNG to write (default: RESULT/render.png)")
    ap.add_argument("--yaw", type=float, nargs="+", default=[0.0, 40.0])
    ap.add_argument("--photo", default=None, help="input photo: adds it with the landmarks drawn")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--obj", default="face.obj")
    args = ap.parse_args(argv)
    import_addon()
    import bpy
    from PIL import Image

    from pix2vertex_addon.blender.render import frame_camera, render_png

    res = Path(args.result)
    tiles = []
    if args.photo:
        lm = json.loads((res / "landmarks.json").read_text())["landmarks_68"]
        tiles.append(landmarks_overlay(Path(args.photo), lm, args.size))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.obj_import(filepath=str(res / args.obj))
    obj = bpy.context.selected_objects[0]
    bpy.ops.object.shade_smooth()
    with tempfile.TemporaryDirectory() as tmp:
        for k, yaw in enumerate(args.yaw):
            frame_camera(obj, yaw_deg=yaw, pitch_deg=0.0, margin=1.05)
            png = render_png(Path(tmp) / f"r{k}.png", resolution=(args.size, args.size), textured=True)
            tiles.append(Image.open(png).convert("RGB"))
    sheet = Image.new("RGB", (args.size * len(tiles), args.size), (255, 255, 255))
    for k, t in enumerate(tiles):
        sheet.paste(t, (k * args.size, 0))
    out = Path(args.output) if args.output else res / "render.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(script_argv()))
