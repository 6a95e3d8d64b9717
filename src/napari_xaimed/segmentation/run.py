"""The ``segment`` entry point and its method registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from napari_xaimed._errors import XaimedError
from napari_xaimed._progress import Progress, Steps, run_steps
from napari_xaimed._validate import as_spacing, as_volume
from napari_xaimed.segmentation.instances import split_instances
from napari_xaimed.segmentation.threshold import otsu_threshold, smooth, threshold_mask


def _threshold(volume: np.ndarray, *, value: float | None = None, percentile: float | None = None,
               **_: Any) -> tuple[np.ndarray, dict[str, Any]]:
    mask, used = threshold_mask(volume, value=value, percentile=percentile)
    return mask, {"threshold": used}


def _otsu(volume: np.ndarray, *, classes: int = 2, **_: Any) -> tuple[np.ndarray, dict[str, Any]]:
    used = otsu_threshold(volume, classes=classes)
    return volume > used, {"threshold": used}


# name -> (function returning (mask, facts), the parameters it reads)
METHODS: dict[str, tuple[Callable[..., tuple[np.ndarray, dict[str, Any]]], tuple[str, ...]]] = {
    "threshold": (_threshold, ("value", "percentile")),
    "otsu": (_otsu, ("classes",)),
}

_COMMON = ("smoothing_mm", "min_size_mm3", "connectivity", "instances")


def segment_steps(
    volume: np.ndarray,
    method: str = "otsu",
    spacing: tuple[float, float, float] | None = None,
    **params: Any,
) -> Steps[tuple[np.ndarray, dict[str, Any]]]:
    """Generator form of :func:`segment`; returns ``(labels, facts)``."""
    if method not in METHODS:
        raise XaimedError(
            f"Unknown segmentation method {method!r}: available are {', '.join(sorted(METHODS))}."
        )
    func, accepted = METHODS[method]
    unknown = set(params) - set(accepted) - set(_COMMON)
    if unknown:
        raise XaimedError(
            f"Method {method!r} does not take {', '.join(sorted(unknown))}; it takes "
            f"{', '.join(accepted + _COMMON)}."
        )
    volume = as_volume(volume, "volume")
    spacing = as_spacing(spacing)
    yield Progress(0, 3, "smoothing")
    smoothed = smooth(volume, float(params.get("smoothing_mm", 0.0)), spacing)
    yield Progress(1, 3, "thresholding")
    mask, facts = func(smoothed, **{k: v for k, v in params.items() if k in accepted})
    yield Progress(2, 3, "labelling components")
    if params.get("instances", True):
        labels = split_instances(
            mask,
            spacing=spacing,
            min_size_mm3=float(params.get("min_size_mm3", 0.0)),
            connectivity=int(params.get("connectivity", 26)),
        )
        facts["instances"] = int(labels.max())
    else:
        labels = mask.astype(np.uint8)
    yield Progress(3, 3, "done")
    return labels, facts


def segment(
    volume: np.ndarray,
    method: str = "otsu",
    spacing: tuple[float, float, float] | None = None,
    **params: Any,
) -> np.ndarray:
    """Segment a 3D volume into labels.

    Parameters
    ----------
    volume : numpy.ndarray
        3D image, ``(z, y, x)``.
    method : str
        One of :data:`METHODS`: ``"threshold"`` (``value=`` or ``percentile=``) or ``"otsu"``
        (``classes=``; more than 2 keeps the brightest multi-Otsu class).
    spacing : tuple of float, optional
        Voxel size in mm (``(z, y, x)``), used by ``smoothing_mm`` and ``min_size_mm3``.
    **params
        The method's parameters and the common ones: ``smoothing_mm`` (Gaussian sigma in mm,
        default 0), ``min_size_mm3`` (default 0), ``connectivity`` (6/18/26, default 26),
        ``instances`` (label connected components, default True; False gives a 0/1 mask).

    Returns
    -------
    numpy.ndarray
        Labels with the volume's shape.

    Examples
    --------
    >>> from napari_xaimed.samples import lesion_volume
    >>> s = lesion_volume(seed=0)
    >>> labels = segment(s.image, "otsu", spacing=s.spacing, classes=3, min_size_mm3=20)
    """
    labels, _ = run_steps(segment_steps(volume, method, spacing, **params))
    return labels
