"""Set-up failures name the real cause: damaged weights (hash-checked at load), a corrupt
config.json, a face model with indices out of range; on the command line each is one line and
exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

WEIGHTS = REPO / "pix2vertex_addon" / "weights"


def _weights_copy(tmp_path: Path) -> Path:
    d = tmp_path / "weights"
    shutil.copytree(WEIGHTS, d)
    return d


def _flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _damage(kind: str, tmp_path: Path) -> Path:
    d = _weights_copy(tmp_path)
    geo = d / "geometry.safetensors"
    if kind == "bit flip":
        _flip_bit(geo, geo.stat().st_size // 2)  # inside the tensors: still loads, wrong numbers
    elif kind == "truncated":
        geo.write_bytes(geo.read_bytes()[: geo.stat().st_size // 3])
    elif kind == "corrupt config":
        (d / "config.json").write_text((d / "config.json").read_text()[:200])
    elif kind == "config without architecture":
        (d / "config.json").write_text(json.dumps({"files": {}}))
    return d


@pytest.mark.parametrize("kind", ["bit flip", "truncated", "corrupt config", "config without architecture"])
def test_damaged_weights_name_the_file_and_say_reinstall(tmp_path, kind):
    from pix2vertex_addon.core.predict import Predictor, WeightsError

    d = _damage(kind, tmp_path)
    with pytest.raises(WeightsError) as err:
        Predictor(d)
    msg = str(err.value)
    assert "reinstall" in msg and "\n" not in msg
    assert str(d / ("config.json" if "config" in kind else "geometry.safetensors")) in msg


def test_unreadable_safetensors_without_a_recorded_hash(tmp_path):
    from pix2vertex_addon.core.predict import Predictor, WeightsError

    d = _damage("truncated", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["sha256"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="cannot be read"):
        Predictor(d)


def _model_with(tmp_path: Path, face_model, **changes) -> Path:
    from pix2vertex_addon.core.face_model import _read_arrays  # the npz or the shipped pack alike

    arrays = _read_arrays(Path(face_model.path))
    for key, fn in changes.items():
        arrays[key] = fn(arrays[key].copy())
    out = tmp_path / "model.npz"
    np.savez(out, **arrays)
    return out


def _set_first(value):
    def f(a):
        a.flat[0] = value
        return a
    return f


@pytest.mark.parametrize("key,value", [("face_uvs", 10**6), ("landmarks_68", 10**6), ("rigid_vertices", -5)])
def test_face_model_indices_out_of_range_are_a_clear_error(tmp_path, face_model, key, value):
    from pix2vertex_addon.core.face_model import FaceModelError, load_face_model

    path = _model_with(tmp_path, face_model, **{key: _set_first(value)})
    with pytest.raises(FaceModelError, match=f"{key}.*out of range"):
        load_face_model(path)


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "reconstruct.py"), *args, "--quiet"],
                          capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_command_line_set_up_failures_are_one_line_and_status_2(tmp_path, face_model):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((128, 128, 3), 120, np.uint8)).save(photo)
    cases = {
        "damaged weights": ["--weights", str(_damage("bit flip", tmp_path / "w1"))],
        "corrupt config": ["--weights", str(_damage("corrupt config", tmp_path / "w2"))],
        "bad face model": ["--face-model", str(_model_with(tmp_path, face_model, face_uvs=_set_first(10**6)))],
        "missing face model": ["--face-model", str(tmp_path / "none.npz")],
        "unwritable output": ["--output", "/proc/p2v-results"],
        "broken runtime package": [],
    }
    fake = tmp_path / "fake" / "scipy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('scipy is broken (test stand-in)')\n")
    for case, extra in cases.items():
        env = {"PYTHONPATH": str(fake.parent)} if case == "broken runtime package" else None
        r = _cli(str(photo), "--output", str(tmp_path / "out"), *extra, cwd=tmp_path, env=env)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, (case, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr + r.stdout, (case, r.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, lines)
        assert "cannot set up" not in lines[0] and "FaceModelError" not in lines[0], (case, lines)  # the cause
        if case == "broken runtime package":
            assert "scipy" in lines[0] and "vendor_install" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
