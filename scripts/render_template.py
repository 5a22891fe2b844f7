"""Add the face template to an empty scene and render it to PNG, headless.

    blender -b -P scripts/render_template.py -- --output out/template.png
    python scripts/render_template.py --output out/template.png      (bpy module)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import import_addon, script_argv  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="out/template.png", help="PNG to write")
    ap.add_argument("--face-model", default=None, help="path to ict_facekit.npz")
    ap.add_argument("--engine", default="BLENDER_WORKBENCH", choices=["BLENDER_WORKBENCH", "CYCLES"])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--yaw", type=float, default=25.0, help="camera yaw in degrees")
    args = ap.parse_args(argv)

    import os

    if args.face_model:
        os.environ["P2V_FACE_MODEL"] = args.face_model
    addon = import_addon()
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    addon.register()
    try:
        if bpy.ops.p2v.add_template() != {"FINISHED"}:
            return 1
        from pix2vertex_addon.blender.render import frame_camera, render_png

        obj = bpy.context.scene.p2v.template
        frame_camera(obj, yaw_deg=args.yaw)
        out = render_png(args.output, engine=args.engine, resolution=(args.resolution, args.resolution))
        print(f"Rendered {obj.name} ({len(obj.data.vertices)} vertices) to {out.resolve()}")
    finally:
        addon.unregister()
    return 0


if __name__ == "__main__":
    sys.exit(main(script_argv()))
