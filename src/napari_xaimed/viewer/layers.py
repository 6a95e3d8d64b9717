"""The one place where results become napari layers.

Functions here build LayerDataTuples ``(data, kwargs, layer_type)`` so every widget, the sample
data and the reader give layers the same world geometry (``scale`` = spacing in mm, ``units``,
``axis_labels``; a file's direction cosines as ``affine``, see
:mod:`napari_xaimed.viewer.orientation`), colormaps and provenance. Only :func:`add_or_update`
touches a viewer (an output without an ``affine`` takes its source layer's, so it overlays it),
and napari is imported lazily so the module stays importable without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_xaimed.io.contrast import percentile_range
from napari_xaimed.io.lazy import is_lazy

LayerTuple = tuple[Any, dict[str, Any], str]

SPATIAL_AXES = ("z", "y", "x")


def world_kwargs(
    spacing: Sequence[float], translate: Sequence[float] | None = None, ndim: int = 3
) -> dict[str, Any]:
    """Geometry for a layer of ``ndim`` axes whose last three are ``(z, y, x)`` in mm.

    Leading extra axes (channel, time) get unit scale and no unit.
    """
    extra = ndim - 3
    if extra < 0:
        raise ValueError(f"layers here are at least 3D, got ndim={ndim}")
    scale = (1.0,) * extra + tuple(float(s) for s in spacing)
    offset = (0.0,) * extra + tuple(float(t) for t in (translate or (0.0, 0.0, 0.0)))
    labels = tuple(f"axis{i}" for i in range(extra)) + SPATIAL_AXES
    units = ("pixel",) * extra + ("mm",) * 3
    return {"scale": scale, "translate": offset, "units": units, "axis_labels": labels}


def source_geometry(layer: Any) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Spacing and translate (last three axes) of an input layer, so outputs overlay it."""
    scale = tuple(float(s) for s in layer.scale[-3:])
    translate = tuple(float(t) for t in layer.translate[-3:])
    return scale, translate  # type: ignore[return-value]


def _metadata(provenance: dict[str, Any] | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = dict(extra or {})
    if provenance is not None:
        meta["xaimed"] = provenance
    return meta


def _sample(data: Any, voxels: int = 1_000_000) -> np.ndarray:
    """An evenly strided subsample of a lazy array, about ``voxels`` large, in memory."""
    step = max(1, int(np.ceil((float(np.prod(data.shape)) / voxels) ** (1 / data.ndim))))
    return np.asarray(data[(slice(None, None, step),) * data.ndim].compute())


def image_layer(
    data: np.ndarray,
    name: str,
    spacing: Sequence[float],
    *,
    translate: Sequence[float] | None = None,
    provenance: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    **kwargs: Any,
) -> LayerTuple:
    """An intensity image: gray colormap, contrast from robust percentiles.

    A lazy (dask) array stays lazy: the percentiles come from an evenly strided sample of
    about a million voxels, so the layer is made without reading the volume."""
    data = data if is_lazy(data) else np.asarray(data)
    lo, hi = percentile_range(_sample(data) if is_lazy(data) else data)
    layer_kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": (float(lo), float(hi)),
        "metadata": _metadata(provenance, metadata),
        **world_kwargs(spacing, translate, data.ndim),
        **kwargs,
    }
    return data, layer_kwargs, "image"


def heatmap_layer(
    data: np.ndarray,
    name: str,
    spacing: Sequence[float],
    *,
    signed: bool | None = None,
    centre: float = 0.0,
    translate: Sequence[float] | None = None,
    provenance: dict[str, Any] | None = None,
    percentile: float = 99.5,
    values: str | None = None,
    **kwargs: Any,
) -> LayerTuple:
    """A map over an image, drawn so the anatomy stays visible (DESIGN.md heatmap conventions).

    Unsigned maps: ``inferno`` from 0 to a high percentile, transparent at 0. Signed maps:
    blue/red with limits symmetric about ``centre`` (0; 1 for a Jacobian determinant),
    transparent at the centre and rendered ``"translucent"`` in 3D (see
    :mod:`napari_xaimed.viewer.heatmaps`). ``signed=None`` decides from the data (any value
    below ``centre``). ``values`` says what the values are, with their unit: the colour bar's
    title, kept in ``metadata["values"]``. A lazy (dask) map stays lazy; its limits come from a
    strided sample, as for images.
    """
    from napari_xaimed.viewer.heatmap_style import VALUES, heatmap_style

    data = data.astype(np.float32) if is_lazy(data) else np.asarray(data, dtype=np.float32)
    sample = _sample(data) if is_lazy(data) else data
    finite = sample[np.isfinite(sample)]
    if signed is None:
        signed = bool(finite.size and finite.min() < centre)
    if signed:
        limit = float(np.percentile(np.abs(finite - centre), percentile)) if finite.size else 1.0
        limit = limit if limit > 0 else 1.0
        limits = (centre - limit, centre + limit)
        default = f"signed, centred on {centre:g}: red above, blue below"
    else:
        high = float(np.percentile(finite, percentile)) if finite.size else 1.0
        high = high if high > 0 else 1.0
        limits = (0.0, high)
        default = "from 0 (transparent) up"
    layer_kwargs = {
        "name": name,
        "opacity": 0.6,
        "contrast_limits": limits,
        "metadata": _metadata(provenance, {VALUES: values or default}),
        **heatmap_style(signed),
        **world_kwargs(spacing, translate, data.ndim),
        **kwargs,
    }
    return data, layer_kwargs, "image"


def labels_layer(
    data: np.ndarray,
    name: str,
    spacing: Sequence[float],
    *,
    translate: Sequence[float] | None = None,
    provenance: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    **kwargs: Any,
) -> LayerTuple:
    """A label map (classes or instances); a lazy (dask) array stays lazy."""
    data = data if is_lazy(data) else np.asarray(data)
    layer_kwargs = {
        "name": name,
        "opacity": 0.7,
        "metadata": _metadata(provenance, metadata),
        **world_kwargs(spacing, translate, data.ndim),
        **kwargs,
    }
    return data, layer_kwargs, "labels"


def vectors_layer(
    data: np.ndarray,
    lengths_mm: np.ndarray,
    name: str,
    spacing: Sequence[float],
    *,
    translate: Sequence[float] | None = None,
    provenance: dict[str, Any] | None = None,
    **kwargs: Any,
) -> LayerTuple:
    """Vectors ``(n, 2, 3)`` in voxel units of a grid of ``spacing``, coloured by length (mm)."""
    layer_kwargs = {
        "name": name,
        "features": {"length_mm": np.asarray(lengths_mm, dtype=np.float32)},
        "edge_color": "length_mm",
        "edge_colormap": "viridis",
        "edge_width": 0.3 * float(min(spacing)),
        "metadata": _metadata(provenance, None),
        **world_kwargs(spacing, translate, 3),
        **kwargs,
    }
    return data, layer_kwargs, "vectors"


def output_name(what: str, *sources: str) -> str:
    """DESIGN.md layer name: ``"<what> [<source>]"`` or ``"<what> [a->b]"`` for two sources."""
    return f"{what} [{'->'.join(sources)}]" if sources else what


def add_or_update(viewer: Any, layer: LayerTuple) -> Any:
    """Add a layer, or update the xaimed output layer of the same name and type in place.

    A user's own layer that happens to have the name is never touched: napari then adds the new
    layer under a numbered name. A layer without an ``affine`` takes the one of the first source
    layer its provenance names (``metadata["xaimed"]["sources"]``) that lies on its grid (same
    scale and translate), so an output of an oblique scan overlays it in patient coordinates.
    """
    data, kwargs, layer_type = layer
    kwargs = _with_source_affine(viewer, kwargs)
    name = kwargs.get("name")
    if name in viewer.layers:
        existing = viewer.layers[name]
        if existing._type_string == layer_type and "xaimed" in existing.metadata:
            if np.ndim(data) == existing.ndim:
                _update(existing, data, kwargs)
                return existing
            # A change of dimensionality cannot be done in place: replace at the same position.
            index = viewer.layers.index(existing)
            viewer.layers.remove(existing)
            new = getattr(viewer, f"add_{layer_type}")(data, **kwargs)
            viewer.layers.move(viewer.layers.index(new), index)
            return new
    add = getattr(viewer, f"add_{layer_type}")
    return add(data, **kwargs)


def _with_source_affine(viewer: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the direction cosines of its source layer as ``affine``, unless it
    brings its own.

    The directions do not depend on spacing or origin: an output on another grid of the same
    scan (a preview slice, a downsampled copy) has its ``scale`` and ``translate`` along the
    source's voxel axes and takes the same rotation. Of several sources, the one whose grid the
    output lies on exactly is taken, else the last (``"a->b"``: results lie on ``b``'s grid);
    identity when no source is a 3D layer in the viewer.
    """
    if "affine" in kwargs or "scale" not in kwargs:
        return kwargs
    names = ((kwargs.get("metadata") or {}).get("xaimed") or {}).get("sources") or []
    sources = [viewer.layers[n] for n in names if isinstance(n, str) and n in viewer.layers]
    sources = [layer for layer in sources if layer.ndim >= 3][::-1]
    on_grid = [layer for layer in sources
               if np.allclose(np.asarray(layer.scale)[-3:], np.asarray(kwargs["scale"])[-3:])
               and np.allclose(np.asarray(layer.translate)[-3:],
                               np.asarray(kwargs.get("translate", (0.0,) * 3))[-3:])]
    chosen = (on_grid or sources or [None])[0]
    spatial = (np.eye(3) if chosen is None
               else np.asarray(chosen.affine.affine_matrix, dtype=float)[-4:-1, -4:-1])
    ndim = len(kwargs["scale"])
    matrix = np.eye(ndim + 1)
    matrix[ndim - 3:ndim, ndim - 3:ndim] = spatial
    return {**kwargs, "affine": matrix}


_GEOMETRY = ("scale", "translate", "units", "axis_labels", "affine")


def _update(layer: Any, data: Any, kwargs: dict[str, Any]) -> None:
    for key in _GEOMETRY:
        if key in kwargs:
            setattr(layer, key, kwargs[key])
    layer.data = data
    for key, value in kwargs.items():
        if key in _GEOMETRY or key == "name":
            continue
        if key == "metadata":
            layer.metadata = dict(value)
        elif hasattr(layer, key):
            setattr(layer, key, value)


#: Colours of the evaluation error map (values in ``evaluation.errors.ERROR_CODES``).
ERROR_COLOURS = {1: "#2ca02c", 2: "#d62728", 3: "#1f77b4", 4: "#ffbf00"}


def error_layer(
    data: np.ndarray,
    name: str,
    spacing: Sequence[float],
    *,
    translate: Sequence[float] | None = None,
    provenance: dict[str, Any] | None = None,
) -> LayerTuple:
    """The evaluation error map: TP green, FP red, FN blue, merged fragments amber."""
    from napari.utils.colormaps import DirectLabelColormap

    colours = {None: "transparent", 0: "transparent", **ERROR_COLOURS}
    return labels_layer(data, name, spacing, translate=translate, provenance=provenance,
                        colormap=DirectLabelColormap(color_dict=colours))


#: Outline colour of the missed references (the error map's FN colour).
MISSED_COLOUR = ERROR_COLOURS[3]


def missed_layer(
    data: np.ndarray,
    entries: Sequence[tuple[str, int]],
    name: str,
    spacing: Sequence[float],
    *,
    translate: Sequence[float] | None = None,
    provenance: dict[str, Any] | None = None,
) -> LayerTuple:
    """The missed references (FN), every one in the error map's FN colour, drawn on top of the
    error map (as an outline, set by the caller: ``contour`` is no layer argument), so a missed
    reference under a prediction matched to another one shows; label ``k`` is ``entries[k-1]``
    = ``(class, reference id)``, shown by napari's status bar."""
    from napari.utils.colormaps import DirectLabelColormap

    features = {"index": list(range(1, len(entries) + 1)),
                "class": [c for c, _ in entries], "reference_id": [r for _, r in entries]}
    return labels_layer(data, name, spacing, translate=translate, provenance=provenance,
                        opacity=1.0, features=features,
                        colormap=DirectLabelColormap(color_dict={None: MISSED_COLOUR,
                                                                 0: "transparent"}))
