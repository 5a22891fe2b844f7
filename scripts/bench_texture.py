"""Benchmark the texture clean-up (``core/texture.py``) stage by stage on a repeat call.

    .venv/bin/python scripts/bench_texture.py [--repeats 7] [--size 1024]
    git show REV:pix2vertex_addon/core/texture.py > old_texture.py
    .venv/bin/python scripts/bench_texture.py --baseline old_texture.py
    git archive REV pix2vertex_addon | tar -x -C /some/folder
    .venv/bin/python scripts/bench_texture.py --baseline /some/folder/pix2vertex_addon

Reconstructs scikit-image's astronaut once (shipped networks), then times the stages of
``clean_texture`` with the layout caches warm (the first call is a warm-up): the texel view and
the raw bake (``core/projection.py``), the confidence, the border distance, the colour test near
the outline and the completion. With ``--baseline`` (a ``texture.py`` of another revision, loaded
as a module of this package; or another revision's whole ``pix2vertex_addon`` folder, whose
``core/projection.py`` then times the texel view and the raw bake too) both versions run
interleaved in one process, so their ratio is measured under the same load; it also prints how
many texels of the two results differ.
Prints a markdown table of median wall milliseconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, import_addon, script_argv  # noqa: E402

STAGES = ("texel view", "raw bake", "confidence", "border distance", "colour test", "completion")


def _load_baseline(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pix2vertex_addon.core._texture_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot load {path} as a Python module")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_package(folder: Path) -> tuple[ModuleType, ModuleType]:
    """(core.texture, core.projection) of another revision's package folder, as a package of its own."""
    import importlib

    spec = importlib.util.spec_from_file_location("p2v_baseline", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot load {folder} as a package")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["p2v_baseline"] = pkg
    spec.loader.exec_module(pkg)
    return importlib.import_module("p2v_baseline.core.texture"), importlib.import_module("p2v_baseline.core.projection")


def _run(tex: ModuleType, case: dict, size: int, proj: ModuleType | None = None) -> tuple[dict[str, float], np.ndarray]:
    """One clean_texture, stage by stage as ``clean_texture`` runs them: (seconds, texture)."""
    if proj is None:
        from pix2vertex_addon.core import projection as proj
    bake_texture, texel_view, texel_weights = proj.bake_texture, proj.texel_view, proj.texel_weights

    photo, cam, v, faces, uvs, mask = (case[k] for k in ("photo", "camera", "vertices", "faces", "uvs", "mask"))
    out: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        out[name] = now - t
        t = now

    view = texel_view(cam, v, faces, uvs, photo.shape[:2], size, depth_crop=case["depth_crop"])
    lap("texel view")
    raw, _ = bake_texture(photo, cam, v, faces, uvs, size=size, view=view)
    lap("raw bake")
    conf = tex.texel_confidence(cam, v, faces, uvs, photo.shape[:2], mask=mask, size=size, view=view)
    lap("confidence")
    border = tex.border_distance(view, mask)
    lap("border distance")
    conf *= tex.border_colour_weight(raw, conf, border, near_px=tex.BORDER_BAND * cam.resolution)
    lap("colour test")
    flat, _, grown, source = texel_weights(faces, uvs, size)
    inside = np.zeros(size * size, dtype=bool)
    inside[flat] = True
    mirror = tex.mirror_texels(case["rest"], faces, uvs, size)
    texture, _ = tex.complete_texture(raw, conf, inside.reshape(size, size), mirror, bleed_index=(grown, source))
    lap("completion")
    return out, texture


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--baseline", type=Path, help="a texture.py of another revision to compare with")
    args = ap.parse_args(argv)
    if args.baseline is not None and not (args.baseline.is_file() or (args.baseline / "core" / "texture.py").is_file()):
        print(f"error: {args.baseline} is neither a file nor a pix2vertex_addon folder", file=sys.stderr)
        return 2
    import_addon()
    sys.path.insert(0, str(REPO / "tests"))
    from pix2vertex_addon.core import texture
    from pix2vertex_addon.core.images import load_image
    from pix2vertex_addon.core.pipeline import Pipeline
    from pix2vertex_addon.core.projection import crop_depth
    from pix2vertex_addon.core.results import detailed_mesh

    from photos import photo_paths

    photo, _ = load_image(photo_paths()["astronaut"])
    pipe = Pipeline()
    rec = pipe.reconstruct(photo)[0]
    t = pipe.model.template
    faces, uvs = np.asarray(t.faces), np.asarray(t.uvs)
    v, q, _ = detailed_mesh(rec, faces, uvs)
    case = {"photo": photo, "camera": rec.camera, "vertices": rec.vertices, "rest": t.vertices_cm * 10.0,
            "faces": faces, "uvs": uvs, "mask": rec.maps["mask"],
            "depth_crop": crop_depth(rec.camera, v, np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]))}
    from pix2vertex_addon.core import projection

    versions = {"this tree": texture}
    projections = {"this tree": projection}
    if args.baseline is not None and args.baseline.is_dir():
        versions["baseline"], projections["baseline"] = _load_package(args.baseline.resolve())
    elif args.baseline is not None:
        versions["baseline"], projections["baseline"] = _load_baseline(args.baseline), projection
    times: dict[str, list[dict[str, float]]] = {k: [] for k in versions}
    results: dict[str, np.ndarray] = {}
    for name, mod in versions.items():  # warm-up: layout caches, the mirror look-up
        _run(mod, case, args.size, projections[name])
    for i in range(args.repeats):
        for name in (list(versions) if i % 2 == 0 else list(versions)[::-1]):
            secs, results[name] = _run(versions[name], case, args.size, projections[name])
            times[name].append(secs)
    names = list(versions)
    print(f"clean_texture on the astronaut, {args.size} px, repeat call, median of {args.repeats} (ms)\n")
    print("| stage | " + " | ".join(names) + (" | ratio |" if len(names) > 1 else ""))
    print("|---" * (len(names) + 1 + (len(names) > 1)) + "|")
    for stage in (*STAGES, "total"):
        med = []
        for name in names:
            per_run = [sum(r.values()) if stage == "total" else r[stage] for r in times[name]]
            med.append(float(np.median(per_run)) * 1000.0)
        ratio = f" | {med[0] / med[1]:.2f}" if len(med) > 1 and med[1] > 0 else ""
        print(f"| {stage} | " + " | ".join(f"{m:.0f}" for m in med) + ratio + " |")
    if len(names) > 1:
        diff = np.abs(results[names[0]].astype(np.int64) - results[names[1]]).max(axis=-1)
        print(f"\ntexels that differ: {int((diff > 0).sum())} of {diff.size} (largest difference {int(diff.max())})")
    return 0


if __name__ == "__main__":
    sys.exit(main(script_argv()))
