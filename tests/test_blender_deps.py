"""Runtime status in Blender: one line per package, the networks and the face model, each with a
fix; Reconstruct and Batch disabled (with the reason) until everything is there."""

from __future__ import annotations

import pytest

from conftest import ADDON_MODULE, addon_module


def test_status_lines_name_every_package_the_networks_and_the_face_model(empty_scene):
    import bpy

    deps = addon_module("blender.deps")
    lines = deps.status_lines(bpy.context)
    labels = [text.split(":")[0] for text, _, _ in lines]
    assert labels == [r.name for r in deps.REQUIREMENTS] + ["Networks", "Face model"]
    assert all(ok for _, ok, _ in lines), lines
    assert "MediaPipe" in labels and "ONNX Runtime" in labels
    assert deps.blocking_reason(bpy.context) is None
    assert deps.face_model_path(bpy.context) == str(addon_module("core.face_model").default_face_model_path())


@pytest.mark.parametrize("absent", ["scipy", "mediapipe", "onnxruntime+torch"])
def test_a_missing_package_disables_reconstruct_and_batch(empty_scene, monkeypatch, absent):
    import bpy

    deps = addon_module("blender.deps")
    gone = set(absent.split("+"))
    real = deps.has_module
    monkeypatch.setattr(deps, "has_module", lambda name: name not in gone and real(name))
    lines = {text.split(":")[0]: (ok, fix) for text, ok, fix in deps.status_lines(bpy.context)}
    name = {"scipy": "SciPy", "mediapipe": "MediaPipe", "onnxruntime+torch": "ONNX Runtime"}[absent]
    ok, fix = lines[name]
    assert not ok and "vendor_install.py" in fix
    reason = deps.blocking_reason(bpy.context)
    assert reason.startswith(f"Missing runtime packages: {name}.")
    assert not bpy.ops.p2v.reconstruct.poll() and not bpy.ops.p2v.batch_reconstruct.poll()
    with pytest.raises(RuntimeError, match=f"Missing runtime packages: {name}"):
        bpy.ops.p2v.reconstruct()
    # the panel shows the reason, wrapped
    assert " ".join(addon_module("blender.panels")._wrap(reason)) == reason


def test_torch_alone_runs_the_networks(empty_scene, monkeypatch):
    import bpy

    deps = addon_module("blender.deps")
    real = deps.has_module
    monkeypatch.setattr(deps, "has_module", lambda name: name != "onnxruntime" and real(name))
    assert deps.missing_packages() == []
    text, ok, _ = next(ln for ln in deps.status_lines(bpy.context) if ln[0].startswith("Networks"))
    assert ok and text == "Networks: torch"


def test_a_missing_face_model_disables_reconstruct_with_the_fix(empty_scene, tmp_path):
    import bpy

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.face_model_path = str(tmp_path / "gone.npz")
    try:
        deps = addon_module("blender.deps")
        reason = deps.blocking_reason(bpy.context)
        assert reason.startswith("Face model not found at") and "clear the Face Model path" in reason
        assert not bpy.ops.p2v.reconstruct.poll()
        face = deps.status_lines(bpy.context)[-1]
        assert face[1] is False and face[2] == reason
    finally:
        prefs.face_model_path = ""
    assert bpy.ops.p2v.reconstruct.poll()
