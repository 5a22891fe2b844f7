"""Shared start-up for scripts that run as ``blender -b -P script.py -- args`` or
``python script.py args`` (with the ``bpy`` module): arguments and the add-on's import path."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def script_argv() -> list[str]:
    """Arguments after ``--`` when present (Blender's convention), else after the script name."""
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return sys.argv[1:]


def import_addon():
    """Import ``pix2vertex_addon`` from this checkout (registration is the caller's choice)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import pix2vertex_addon

    return pix2vertex_addon
