"""The photo-like test set: held-out faces rendered with Cycles in bpy, with exact labels.

    .venv/bin/python scripts/render_cycles_testset.py --out DIR [--n 24] [--samples 24] [--size 256]
    .venv/bin/python scripts/render_cycles_testset.py --split val --out DIR ...   (for choosing weights)

Faces of the generator's *test* split (identities never trained on, never used to choose weights;
``--split val``: the same scenes on validation identities from seed 1,000,700,000, not the
landmark map's nor ``bench_landmarks.py --set val``'s, the set for choosing weights on Cycles
renders) with the poses and expressions of :func:`scene_list`: the head (skin, eyes, mouth interior: the
generator's render mesh, its per-vertex albedo) is rendered by Cycles on the CPU with a
subsurface-scattering skin material (Principled BSDF), a three-point rig of area lights (key,
fill, rim; no HDRI), a plain backdrop colour, depth of field off. The labels come from the same
scene: the camera is the generator's pinhole (focal, principal point at the centre, pixel
centres at +0.5), and depth, mask, correspondence and the true vertices are the generator's
exact rasterisation of the same mesh. One ``<name>.npz`` per image (image, xyz, mask, corr,
vertices_cam, focal_px, z_ref_mm, seed, yaw/pitch/roll) and ``<name>.png``; files are written
atomically, finished ones are skipped. ``scripts/bench_landmarks.py --set cycles`` reports on it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIRST_TEST_SEED = 1_010_700_000
FIRST_SEED = {"test": FIRST_TEST_SEED, "val": 1_000_700_000}
YAWS = (0.0, -20.0, 20.0, -35.0, 35.0, 0.0, -10.0, 10.0)
PITCHES = (0.0, 10.0, -10.0)


def scene_list(n: int, split: str = "test") -> list[dict]:
    """Seed, pose and expression (every third neutral, the others the seed's random one)."""
    out = []
    for i in range(n):
        out.append(dict(seed=FIRST_SEED[split] + i, yaw_deg=YAWS[i % len(YAWS)], pitch_deg=PITCHES[(i // 2) % 3],
                        roll_deg=float((i % 5) - 2) * 2.0, neutral=i % 3 == 0))
    return out


def head_mesh(model, sample: dict):
    """Camera-frame vertices (mm) of the whole render mesh, its triangles and linear albedo."""
    from pix2vertex_addon.training.synth import appearance as A
    from pix2vertex_addon.training.synth.generator import _shape_cm
    from pix2vertex_addon.training.synth.mesh import render_mesh
    from pix2vertex_addon.training.synth.sampling import rng_for

    rm = render_mesh(model)
    meta = sample["meta"]
    v_cm = _shape_cm(model, rm, meta["identity"].astype(np.float64), meta["expression"].astype(np.float64))
    x = (v_cm * 10.0) @ meta["rotation"].T + meta["translation_mm"]
    app = A.sample_appearance(rng_for(meta["seed"], "appearance"))
    albedo, _, _ = A.vertex_albedo(rm, app)
    albedo = albedo.copy()
    # irises: a dark disc around each eyeball's forward (+z) axis on the sclera vertices
    from pix2vertex_addon.training.synth.mesh import SCLERA

    eye_v = np.flatnonzero(np.asarray(rm.part) == SCLERA)
    for centre in rm.eye_centres_cm:
        d = rm.neutral_cm[eye_v] - centre
        cos = d[:, 2] / (np.linalg.norm(d, axis=1) + 1e-9)
        near = np.linalg.norm(d, axis=1) < 2.0
        albedo[eye_v[near & (cos > np.cos(np.deg2rad(28)))]] = (0.12, 0.06, 0.03)
        albedo[eye_v[near & (cos > np.cos(np.deg2rad(12)))]] = (0.01, 0.01, 0.01)
    return x, rm.triangles, np.clip(albedo, 0.0, 1.0), rm


def build_scene(x_mm, tris, albedo, rm, focal_px: float, size: int, samples: int):
    import bpy

    from pix2vertex_addon.training.synth.mesh import SCLERA

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    # camera frame (x right, y down, z forward, mm) -> Blender (x right, y up, -z forward, m)
    co = np.stack([x_mm[:, 0], -x_mm[:, 1], -x_mm[:, 2]], axis=1) / 1000.0
    mesh = bpy.data.meshes.new("head")
    mesh.vertices.add(len(co))
    mesh.vertices.foreach_set("co", co.astype(np.float32).ravel())
    mesh.loops.add(tris.size)
    mesh.loops.foreach_set("vertex_index", tris.astype(np.int32).ravel())
    mesh.polygons.add(len(tris))
    mesh.polygons.foreach_set("loop_start", np.arange(0, tris.size, 3, dtype=np.int32))
    mesh.update()
    mesh.validate()
    for p in mesh.polygons:
        p.use_smooth = True
    col = mesh.color_attributes.new("albedo", "FLOAT_COLOR", "POINT")
    rgba = np.concatenate([albedo, np.ones((len(albedo), 1))], axis=1).astype(np.float32)
    col.data.foreach_set("color", rgba.ravel())
    obj = bpy.data.objects.new("head", mesh)
    scene.collection.objects.link(obj)

    skin = bpy.data.materials.new("skin")
    skin.use_nodes = True
    nt = skin.node_tree
    bsdf = nt.nodes["Principled BSDF"]
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_name = "albedo"
    nt.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Subsurface Weight"].default_value = 1.0
    bsdf.inputs["Subsurface Radius"].default_value = (1.0, 0.35, 0.2)
    bsdf.inputs["Subsurface Scale"].default_value = 0.003  # m
    bsdf.inputs["Roughness"].default_value = 0.45
    eye = bpy.data.materials.new("eye")
    eye.use_nodes = True
    eb = eye.node_tree.nodes["Principled BSDF"]
    ea = eye.node_tree.nodes.new("ShaderNodeAttribute")
    ea.attribute_name = "albedo"
    eye.node_tree.links.new(ea.outputs["Color"], eb.inputs["Base Color"])
    eb.inputs["Roughness"].default_value = 0.1
    mesh.materials.append(skin)
    mesh.materials.append(eye)
    mesh.polygons.foreach_set("material_index", (np.asarray(rm.tri_part) == SCLERA).astype(np.int32))

    def light(name, energy, loc, size_m, colour):
        ld = bpy.data.lights.new(name, "AREA")
        ld.energy, ld.size, ld.color = energy, size_m, colour
        lo = bpy.data.objects.new(name, ld)
        lo.location = loc
        target = obj.matrix_world.translation.copy()
        centre = co.mean(axis=0)
        target.x, target.y, target.z = centre
        lo.rotation_euler = (target - lo.location).to_track_quat("-Z", "Y").to_euler()
        scene.collection.objects.link(lo)

    c = co.mean(axis=0)
    d = float(-c[2])
    light("key", 10.0 * d * d, (c[0] - 0.6 * d, c[1] + 0.4 * d, c[2] + 0.8 * d), 0.3 * d, (1.0, 0.96, 0.9))
    light("fill", 3.0 * d * d, (c[0] + 0.7 * d, c[1] - 0.1 * d, c[2] + 0.7 * d), 0.5 * d, (0.9, 0.95, 1.0))
    light("rim", 6.0 * d * d, (c[0] + 0.2 * d, c[1] + 0.5 * d, c[2] - 0.6 * d), 0.2 * d, (1.0, 1.0, 1.0))
    world = bpy.data.worlds.new("backdrop")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.18, 0.2, 0.22, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.6
    scene.world = world

    cam_d = bpy.data.cameras.new("cam")
    cam_d.sensor_fit = "HORIZONTAL"
    cam_d.sensor_width = 36.0
    cam_d.lens = focal_px * 36.0 / size
    cam_d.clip_start, cam_d.clip_end = 0.01, 100.0
    cam_d.dof.use_dof = False
    cam = bpy.data.objects.new("cam", cam_d)
    scene.collection.objects.link(cam)
    scene.camera = cam
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x = r.resolution_y = size
    r.resolution_percentage = 100
    r.film_transparent = False
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 4
    r.threads_mode = "FIXED"
    r.threads = 2
    scene.view_settings.view_transform = "Standard"
    return scene


def render_one(model, spec: dict, size: int, samples: int) -> dict:
    import bpy

    from pix2vertex_addon.training.synth.generator import generate_sample

    kw = {k: spec[k] for k in ("yaw_deg", "pitch_deg", "roll_deg")}
    if spec["neutral"]:
        kw["expression"] = {}
    s = generate_sample(spec["seed"], size, model, clean=True, **kw)
    x, tris, albedo, rm = head_mesh(model, s)
    build_scene(x, tris, albedo, rm, s["meta"]["focal_px"], size, samples)
    tmp = Path(bpy.app.tempdir or tempfile.gettempdir()) / f"p2v_cycles_{spec['seed']}.png"
    bpy.context.scene.render.filepath = str(tmp)
    bpy.context.scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(write_still=True)
    from PIL import Image

    img = np.asarray(Image.open(tmp).convert("RGB"))
    tmp.unlink()
    return dict(image=img, xyz=s["xyz"], mask=s["mask"], corr=s["corr"], vertices_cam=s["vertices_cam"],
                focal_px=s["meta"]["focal_px"], z_ref_mm=s["meta"]["z_ref_mm"], seed=spec["seed"],
                yaw_deg=spec["yaw_deg"], pitch_deg=spec["pitch_deg"], roll_deg=spec["roll_deg"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--split", choices=sorted(FIRST_SEED), default="test")
    a = ap.parse_args(argv)
    from PIL import Image

    from pix2vertex_addon.core.face_model import load_synth_face_model
    from pix2vertex_addon.training.synth.sampling import split_of_seed

    model = load_synth_face_model()
    a.out.mkdir(parents=True, exist_ok=True)
    for spec in scene_list(a.n, a.split):
        assert split_of_seed(spec["seed"]) == a.split
        name = f"cycles_{spec['seed']}"
        if (a.out / f"{name}.npz").exists():
            continue
        t0 = time.perf_counter()
        d = render_one(model, spec, a.size, a.samples)
        tmp = a.out / f"{name}.tmp.npz"
        np.savez_compressed(tmp, **d)
        tmp.replace(a.out / f"{name}.npz")
        Image.fromarray(d["image"]).save(a.out / f"{name}.png")
        print(f"{name}: yaw {spec['yaw_deg']:+.0f} pitch {spec['pitch_deg']:+.0f} "
              f"{'neutral' if spec['neutral'] else 'expression'}, {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
