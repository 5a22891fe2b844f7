"""Result files: OBJ text, atomic folders, read-only destinations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pix2vertex_addon.core.export import AtomicFolder, OutputError, format_obj, write_obj


def _parse_obj(text):
    v, vt, f = [], [], []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            v.append([float(x) for x in parts[1:]])
        elif parts[0] == "vt":
            vt.append([float(x) for x in parts[1:]])
        elif parts[0] == "f":
            f.append([tuple(int(i) - 1 for i in c.split("/")) for c in parts[1:]])
    return np.array(v), np.array(vt), f


def test_obj_roundtrip_keeps_order_and_uvs(face_model):
    t = face_model.template
    text = format_obj(t.vertices_m, t.faces, t.uvs, mtl_file="face.mtl")
    v, vt, f = _parse_obj(text)
    np.testing.assert_allclose(v, t.vertices_m, atol=1e-6)
    assert len(f) == len(t.faces)
    # polygons come out grouped by size (triangles, then quads): compare as sets of corners
    got = {tuple(c[0] for c in poly) for poly in f}
    want = {tuple(int(i) for i in row if i >= 0) for row in t.faces}
    assert got == want
    # every corner's UV is the template's
    lookup = {tuple(int(i) for i in row if i >= 0): k for k, row in enumerate(t.faces)}
    for poly in f[:: max(1, len(f) // 500)]:
        k = lookup[tuple(c[0] for c in poly)]
        np.testing.assert_allclose(vt[[c[1] for c in poly]], t.uvs[k, : len(poly)], atol=1e-6)
    assert "mtllib face.mtl" in text and "usemtl face" in text


def test_obj_rejects_bad_input():
    with pytest.raises(ValueError):
        format_obj(np.zeros((3, 2)), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError):
        format_obj(np.zeros((3, 3)), np.array([[0, 1, 5]]))


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "out" / "photo"
    with AtomicFolder(final) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "a"
    with pytest.raises(RuntimeError):
        with AtomicFolder(final, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash while writing")
    assert (final / "a.txt").read_text() == "a", "the finished result is untouched"
    assert sorted(p.name for p in final.parent.iterdir()) == ["photo"], "no temporary folder left"
    with pytest.raises(FileExistsError):
        with AtomicFolder(final):
            pass
    with AtomicFolder(final, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["photo"]


def test_read_only_destination_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            # root ignores permission bits: use a file system that refuses new folders instead
            ro = Path("/sys")
        with pytest.raises(OutputError) as err:
            with AtomicFolder(ro / "photo" / "result"):
                pass
        assert str(ro) in str(err.value)
        assert not (ro / "photo").exists()
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_write_obj_and_mtl(tmp_path, face_model):
    t = face_model.template
    obj, mtl = write_obj(tmp_path, t.vertices_m, t.faces, t.uvs)
    assert obj.name == "face.obj" and "map_Kd texture.png" in mtl.read_text()


def test_fixed_rows_is_pythons_formatting():
    """The vertex lines' fast formatter gives Python's ``%.6f`` text exactly: signs (negative
    zero too), values that round to zero, exact ties (half to even), values a hair from a rounding
    boundary, several integer digits, and the non-finite or huge values it leaves to Python."""
    from pix2vertex_addon.core.export import fixed_rows

    rng = np.random.default_rng(3)
    cases = [rng.normal(0, 0.1, (5000, 3)), rng.normal(0, 1e4, (500, 3)),
             np.round(rng.normal(0, 0.1, (2000, 3)) * 2e6) / 2e6,  # exact halves of the last digit
             np.nextafter(np.round(rng.normal(0, 0.1, (2000, 3)) * 2e6) / 2e6, 1.0),
             np.array([[-1e-9, -0.0, 0.0078125], [2.5e-7, -5e-7, 1.0000005], [999.9999995, -1234567.25, 3.0],
                       [9.9999995, 0.9999995, 99.99999949], [1e-300, -1e-300, 5e-324]]),
             np.array([[np.nan, 1.0, np.inf]]), rng.normal(0, 1e9, (50, 3)), np.zeros((0, 3))]
    fmt_v, fmt_vt = "v %.6f %.6f %.6f\n", "vt %.7f %.7f\n"  # what format_obj wrote before
    for a in cases:
        assert fixed_rows("v ", a) == "".join(fmt_v % tuple(r) for r in a.tolist())
    b = rng.uniform(0, 1, (300, 2))
    assert fixed_rows("vt ", b, 7) == "".join(fmt_vt % tuple(r) for r in b.tolist())
