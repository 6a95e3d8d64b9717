"""Heatmaps in the viewer: a colour bar with a title on every map, and only the newest map of a
run shown (their colormaps: :mod:`napari_xaimed.viewer.heatmap_style`).

:func:`show_heatmaps` adds or updates a run's maps through
:func:`~napari_xaimed.viewer.layers.add_or_update`, shows the last one and hides the other
heatmaps over the same image (none is deleted; maps of other images keep their visibility),
and turns on the layer's ``colorbar`` overlay with a text overlay
above it naming the layer and what its values are (``metadata["values"]``), shown while the
layer is. napari is imported lazily so this module stays importable without it.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from typing import Any

from napari_xaimed.viewer.heatmap_style import (  # noqa: F401 - also importable from here
    DIVERGING,
    SEQUENTIAL,
    VALUES,
    diverging_colormap,
    heatmap_style,
    sequential_colormap,
)
from napari_xaimed.viewer.layers import add_or_update

_TITLE_KEY = "xaimed heatmap title {}"
# "<what> [<source>]" or "<what> [a->b]", with napari's " [2]" when the name was taken
_SOURCE = re.compile(r"\[([^\[\]]+)\](?: \[\d+\])?$")


def is_heatmap(layer: Any) -> bool:
    """An xaimed heatmap layer (made by :func:`~napari_xaimed.viewer.layers.heatmap_layer`)."""
    return getattr(layer, "_type_string", "") == "image" and VALUES in layer.metadata


def sources_of(layer: Any) -> set[str]:
    """The images a layer was computed from: its provenance's ``sources``, else the
    ``[a->b]`` of its DESIGN.md name; empty when neither says."""
    sources = (layer.metadata.get("xaimed") or {}).get("sources") or []
    if sources:
        return {str(s) for s in sources}
    match = _SOURCE.search(layer.name)
    return set(match.group(1).split("->")) if match else set()


def show_heatmaps(viewer: Any, layers: Sequence[Any], shown: int | None = -1) -> list[Any]:
    """Add or update heatmap LayerDataTuples; show only ``layers[shown]`` among the heatmaps
    of the same image.

    Every other heatmap over the images these maps come from (:func:`sources_of`), older
    runs' and other jobs' included, is hidden but kept, so maps never stack over the anatomy;
    heatmaps of other images keep their visibility (maps whose source is unknown hide every
    other heatmap). ``shown=None`` adds the maps hidden and leaves the others as they are.
    Each map gets its colour bar and title.

    Returns
    -------
    list
        The napari layers, in the order given.
    """
    added = [add_or_update(viewer, layer) for layer in layers]
    keep = None if shown is None or not added else added[shown]
    if shown is not None:
        images = set().union(*(sources_of(layer) for layer in added))
        for layer in viewer.layers:
            if is_heatmap(layer) and layer is not keep and (
                    not images or not sources_of(layer) or sources_of(layer) & images):
                layer.visible = False
    for layer in added:
        layer.visible = layer is keep
        decorate(viewer, layer)
    return added


_WATCHED: weakref.WeakSet = weakref.WeakSet()  # viewers and layers already connected


def watch(viewer: Any) -> None:
    """Give every heatmap in ``viewer``, present and to come (the samples' too), its colour bar
    and title; the docks that make heatmaps call this when they open."""
    if viewer in _WATCHED:
        return
    _WATCHED.add(viewer)

    def inserted(event: Any) -> None:
        if is_heatmap(event.value):
            decorate(viewer, event.value)
        sync_titles(viewer)

    viewer.layers.events.inserted.connect(inserted)
    viewer.layers.events.removed.connect(lambda _: sync_titles(viewer))
    for layer in list(viewer.layers):
        if is_heatmap(layer):
            decorate(viewer, layer)


def decorate(viewer: Any, layer: Any) -> None:
    """Turn on a heatmap layer's colour bar and keep its title overlay in step with it."""
    layer.colorbar.visible = True
    watch(viewer)
    if layer not in _WATCHED:
        _WATCHED.add(layer)
        layer.events.visible.connect(lambda _: sync_titles(viewer))
        layer.events.name.connect(lambda _: sync_titles(viewer))
    sync_titles(viewer)


def title_text(layer: Any) -> str:
    """A heatmap's colour bar title: the layer's name and what its values are."""
    return f"{layer.name}\n{layer.metadata.get(VALUES, '')}".strip()


def sync_titles(viewer: Any) -> None:
    """One text overlay per heatmap whose colour bar shows, above the colour bars (napari
    tiles viewer overlays before layer overlays at the same position)."""
    from napari.components.overlays import TextOverlay

    overlays = viewer.canvas.overlays
    wanted = {}
    for layer in viewer.layers:
        if is_heatmap(layer) and layer.colorbar.visible:
            wanted[_TITLE_KEY.format(id(layer))] = (title_text(layer), layer.visible,
                                                    layer.colorbar.position)
    for key in [k for k in overlays if k.startswith(_TITLE_KEY.format(""))]:
        if key not in wanted:
            overlays.pop(key)
    for key, (text, visible, position) in wanted.items():
        if key not in overlays:
            overlays[key] = TextOverlay(text=text, visible=visible, position=position,
                                        font_size=9)
        else:
            overlay = overlays[key]
            overlay.text, overlay.visible, overlay.position = text, visible, position
