"""Blender's Reconstruct writes through the same core path as the batch (same report, same
identity record, same lock) and, with an empty Results setting, leaves no files behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from test_blender_reconstruct import oracle, photo, sample, scene_with_template  # noqa: F401 - fixtures

from conftest import addon_module


@pytest.mark.slow
def test_reconstruct_report_matches_the_batch(scene_with_template, oracle, photo, tmp_path):  # noqa: F811
    import bpy

    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    rep = json.loads((tmp_path / "results" / "synthetic face" / "report.json").read_text())
    assert rep["image"]["format"] == "PNG" and rep["image"]["mode"] == "RGB"
    ident = rep["identity"]
    assert ident["input"]["path"] == str(Path(photo).resolve()) and len(ident["input"]["sha256"]) == 64
    assert ident["options"]["detail"] is True and ident["weights"] == "OraclePredictor"
    # a second Reconstruct of the same photo replaces its own result; nothing else appears
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["synthetic face"]


def test_reconstruct_never_replaces_another_photos_result(scene_with_template, oracle, photo, tmp_path):  # noqa: F811
    import bpy

    s = scene_with_template.p2v
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    other = tmp_path / "other" / "synthetic face.png"
    other.parent.mkdir()
    other.write_bytes(Path(photo).read_bytes())
    s.image_path = str(other)
    with pytest.raises(RuntimeError, match="holds the result of another input.*it is kept"):
        bpy.ops.p2v.reconstruct()
    rep = json.loads((tmp_path / "results" / "synthetic face" / "report.json").read_text())
    assert rep["identity"]["input"]["path"] == str(Path(photo).resolve())


@pytest.mark.slow
def test_empty_results_setting_leaves_nothing_behind(scene_with_template, oracle):  # noqa: F811
    import bpy

    scratch = addon_module("blender.scratch")
    s = scene_with_template.p2v
    s.output_dir = ""
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.iterdir())
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    assert bpy.ops.p2v.reconstruct() == {"FINISHED"}
    root = scratch.root()
    assert not root.exists() or not any(root.iterdir()), "no result files kept"
    new = {p for p in set(tmp.iterdir()) - before if p.name.startswith(("p2v-", scratch.PREFIX))}
    assert new <= {root}, "the old code left a p2v-* folder of about 6 MB per Reconstruct"
    mat = s.template.active_material
    img = next(n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE")
    assert img.packed_file is not None, "the texture lives in the .blend"
    # the folder of a Blender that was killed is removed when the add-on is next enabled
    dead = tmp / f"{scratch.PREFIX}{_dead_pid()}"
    (dead / "x").mkdir(parents=True, exist_ok=True)
    assert dead.name in scratch.remove_stale() and not dead.exists()


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        pid += 1
