"""Render a result's full head in three poses of its rig, from the front and the side, into one PNG.

    blender -b -P scripts/render_head.py -- RESULT_DIR [--output head_poses.png]
    python scripts/render_head.py RESULT_DIR ...                       (bpy module)

The head is built from the result's face_base.obj (as scripts/reconstruct.py does) and put into
an empty scene with the add-on's Blender code. Rows: neutral (Basis), jawOpen + eyeBlinkLeft,
mouthSmileLeft + browInnerUp; columns: the views (--yaw, degrees).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import import_addon, script_argv  # noqa: E402

POSES: tuple[tuple[str, dict[str, float]], ...] = (
    ("neutral", {}),
    ("jawOpen + eyeBlinkLeft", {"jawOpen": 1.0, "eyeBlinkLeft": 1.0}),
    ("mouthSmileLeft + browInnerUp", {"mouthSmileLeft": 1.0, "browInnerUp": 1.0}),
)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", help="a result folder (with face_base.obj and texture.png)")
    ap.add_argument("--output", default=None, help="PNG to write (default: RESULT/head_poses.png)")
    ap.add_argument("--yaw", type=float, nargs="+", default=[0.0, 90.0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--engine", default="BLENDER_WORKBENCH", choices=("BLENDER_WORKBENCH", "CYCLES"))
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--face-model", default=None)
    args = ap.parse_args(argv)
    import_addon()
    import bpy
    import numpy as np
    from PIL import Image, ImageDraw

    from pix2vertex_addon.blender.head import add_head_object
    from pix2vertex_addon.blender.render import frame_camera, render_png
    from pix2vertex_addon.core.face_model import load_face_model
    from pix2vertex_addon.core.head import build_head
    from pix2vertex_addon.core.head_files import MM_TO_M, read_obj_vertices

    res = Path(args.result)
    base = res / "face_base.obj"
    if not base.is_file():
        print(f"error: {res} has no face_base.obj (not a pix2vertex result)", file=sys.stderr)
        return 2
    model = load_face_model(args.face_model)
    head = build_head(model, read_obj_vertices(base) / MM_TO_M)
    bpy.ops.wm.read_homefile(use_empty=True)
    obj = add_head_object(bpy.context, head, res.name, res / "texture.png")
    keys = obj.data.shape_keys.key_blocks
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p, (label, weights) in enumerate(POSES):
            for k in keys[1:]:
                k.value = weights.get(k.name, 0.0)
            tiles = []
            for j, yaw in enumerate(args.yaw):
                frame_camera(obj, yaw_deg=yaw, pitch_deg=5.0, margin=1.05)
                out = Path(tmp) / f"{p}_{j}.png"
                render_png(out, engine=args.engine, resolution=(args.size, args.size), samples=args.samples,
                           textured=True)
                tiles.append(np.asarray(Image.open(out).convert("RGB")))
            row = Image.fromarray(np.concatenate(tiles, axis=1))
            ImageDraw.Draw(row).text((8, 8), label, fill=(0, 0, 0))
            rows.append(np.asarray(row))
    grid = np.concatenate(rows, axis=0)
    from pix2vertex_addon.core.images import save_png_atomic

    out_png = Path(args.output) if args.output else res / "head_poses.png"
    save_png_atomic(out_png, grid)
    print(f"wrote {out_png} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(script_argv()))
