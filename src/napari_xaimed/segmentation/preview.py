"""A quick look at one slice: the classical methods applied to a slab around it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import run_steps
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.segmentation.run import METHODS, method_params, segment_steps
from napari_xaimed.segmentation.threshold import (
    multi_otsu_thresholds,
    otsu_threshold,
    smooth,
    threshold_mask,
)


def preview_slice(volume: np.ndarray, z: int, method: str = "otsu",
                  spacing: tuple[float, float, float] | None = None, **params: Any) -> np.ndarray:
    """What :func:`~napari_xaimed.segmentation.segment` gives on slice ``z``, quickly.

    The threshold (value, percentile, Otsu, multi-Otsu) comes from the whole volume; smoothing
    and opening run on a slab deep enough around the slice that, without smoothing, the slice
    equals the full result's. With smoothing, the threshold is the unsmoothed volume's (the
    full run takes the smoothed one's), and hole filling sees only the slab: an approximation.
    Instances are not labelled: the preview shows the mask (or the classes).

    Returns
    -------
    numpy.ndarray
        uint8 ``(y, x)``: 0/1 for mask methods, classes ``1..n`` for multi-Otsu.
    """
    if method not in METHODS:
        method_params(method)  # raises the unknown-method error
    if not METHODS[method].cheap:
        raise XaimedError(f"{method!r} has no slice preview (it needs the whole volume): press "
                          "Segment.")
    unknown = set(params) - set(method_params(method))
    if unknown:
        raise XaimedError(f"Method {method!r} does not take {', '.join(sorted(unknown))}.")
    volume = as_volume(volume, "volume")
    spacing = as_spacing(spacing)
    if not 0 <= int(z) < volume.shape[0]:
        raise XaimedError(f"slice {z} is outside the volume's 0-{volume.shape[0] - 1}.")
    sigma = float(params.get("smoothing_mm", 0.0))
    radius = float(params.get("opening_mm", 0.0))
    margin = math.ceil((3 * sigma + 2 * radius) / spacing[0]) + 1
    lo, hi = max(0, int(z) - margin), min(volume.shape[0], int(z) + margin + 1)
    slab = volume[lo:hi]
    if method == "multiotsu":
        thresholds = multi_otsu_thresholds(volume, classes=int(params.get("classes", 3)))
        smoothed = smooth(slab, sigma, spacing)[int(z) - lo]
        return (np.digitize(smoothed, thresholds, right=True) + 1).astype(np.uint8)
    if method == "otsu":
        value = otsu_threshold(volume, classes=int(params.get("classes", 2)))
    else:
        _, value = threshold_mask(volume, value=params.get("value"),
                                  percentile=params.get("percentile"))
    post = {k: params[k] for k in ("smoothing_mm", "opening_mm", "fill_holes") if k in params}
    result = run_steps(segment_steps(slab, "threshold", spacing, value=value, instances=False,
                                     **post))
    return result.labels[int(z) - lo].astype(np.uint8)


def preview_slice_lazy(volume: Any, z: int, method: str = "otsu",
                       spacing: tuple[float, float, float] | None = None, *,
                       threshold: float | None = None, classes: int = 2,
                       value: float | None = None, **params: Any) -> tuple[np.ndarray, float]:
    """What :func:`~napari_xaimed.segmentation.lazy.segment_lazy` gives on slice ``z`` of a
    volume larger than memory, as a mask, reading one plane (and, for Otsu without a
    ``threshold``, one slab-by-slab pass for the histogram).

    Parameters
    ----------
    volume : array-like
        3D ``(z, y, x)``: dask, zarr, memory map or numpy.
    z : int
        The slice.
    method : {"otsu", "threshold"}
    spacing : tuple of float, optional
        Voxel size in mm (checked only: the lazy methods do not look across voxels).
    threshold : float, optional
        An Otsu threshold found before on the same volume and classes (the widget keeps it,
        so a second preview reads one plane only).
    classes, value
        As for ``segment_lazy``.
    **params
        The other options of ``segment_lazy``: those that look across slabs are refused
        unless off; the instance options do not change a mask and are ignored.

    Returns
    -------
    (numpy.ndarray, float)
        uint8 ``(y, x)`` 0/1 mask (voxels strictly above the threshold) and the threshold.
    """
    from napari_xaimed.io.lazy import read_slab
    from napari_xaimed.segmentation.lazy import (
        _NOT_LAZY,
        _check_3d,
        check_lazy_method,
        otsu_threshold_lazy,
    )

    shape = _check_3d(volume)
    as_spacing(spacing)
    check_lazy_method(method, {k: v for k, v in params.items() if k in _NOT_LAZY})
    if not 0 <= int(z) < shape[0]:
        raise XaimedError(f"slice {z} is outside the volume's 0-{shape[0] - 1}.")
    if threshold is None:
        if method == "otsu":
            threshold = otsu_threshold_lazy(volume, classes=int(classes))
        elif value is None:
            raise XaimedError("method 'threshold' needs value= (voxels strictly above it).")
        else:
            threshold = float(value)
    plane = read_slab(volume, int(z), int(z) + 1)[0]
    return (plane > threshold).astype(np.uint8), float(threshold)
