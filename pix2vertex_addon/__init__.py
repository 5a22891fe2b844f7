"""pix2vertex for Blender: one photo of a face to a detailed, animatable 3D face mesh.

Importing this package never imports ``bpy`` (so the core runs in plain Python, in worker
processes and in tests); :func:`register` pulls in the Blender-facing part.
"""

from __future__ import annotations

__version__ = "0.1.0"


def register() -> None:
    from . import blender

    blender.register()


def unregister() -> None:
    from . import blender

    blender.unregister()
