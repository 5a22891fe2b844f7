# The Blender extension's entry point (the manifest sits at the repository top). Everything lives
# in the ``pix2vertex_addon`` package; keep this file to these lines. Imported as a plain module
# (pytest does that when the checkout's folder name is not a valid package name), it is empty.
if __package__:
    from .pix2vertex_addon import register, unregister

    __all__ = ["register", "unregister"]
