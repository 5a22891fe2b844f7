"""The add-on's core: geometry, networks, images and the face model. Never imports ``bpy``."""
