"""core/atomic.py: a file appears whole under its final name or not at all."""

from __future__ import annotations

import json
import os

import pytest

from pix2vertex_addon.core.atomic import atomic_file, write_json_atomic


def test_atomic_file_replaces_only_on_success(tmp_path):
    out = tmp_path / "a.png"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(out) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".")
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    with atomic_file(out) as tmp:
        tmp.write_bytes(b"new")
        assert out.read_bytes() == b"old"  # not visible before the block ends
    assert out.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_atomic_file_mode_and_suffix(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "c.json", {"a": 1})
        with atomic_file(tmp_path / "s.npz", keep_suffix=False) as tmp:
            assert not tmp.name.endswith(".npz")  # shard readers glob *.npz
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": 1}
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o644
