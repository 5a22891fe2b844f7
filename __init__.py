# The Blender extension's entry point (the manifest sits at the repository top). Everything lives
# in the ``pix2vertex_addon`` package; keep this file to these lines.
from .pix2vertex_addon import register, unregister

__all__ = ["register", "unregister"]
