"""Thumbnail of the chosen photo for the panel (``bpy.utils.previews``; freed on unregister)."""

from __future__ import annotations

import os

import bpy

_collection = None


def collection_if_open():
    """The add-on's preview collection, None before the first thumbnail."""
    return _collection


def collection():
    """The add-on's preview collection (photo thumbnail, faces overlay), made on first use."""
    return _pcoll()


def _pcoll():
    global _collection
    if _collection is None:
        import bpy.utils.previews

        _collection = bpy.utils.previews.new()
    return _collection


def preview_icon(settings) -> int:
    """Icon id of the photo's thumbnail, 0 when there is nothing to show."""
    if settings.image is not None:
        settings.image.preview_ensure()
        return settings.image.preview.icon_id
    path = bpy.path.abspath(settings.image_path) if settings.image_path else ""
    if not path or not os.path.isfile(path):
        return 0
    pcoll = _pcoll()
    if path not in pcoll:
        pcoll.load(path, path, "IMAGE")
    return pcoll[path].icon_id


def clear_preview() -> None:
    if _collection is not None:
        _collection.clear()


def unregister_previews() -> None:
    global _collection
    if _collection is not None:
        import bpy.utils.previews

        bpy.utils.previews.remove(_collection)
        _collection = None
