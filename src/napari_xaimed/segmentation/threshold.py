"""Intensity thresholds: absolute, percentile and (multi-)Otsu."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError


def smooth(volume: np.ndarray, sigma_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Gaussian smoothing with a standard deviation in mm (per-axis in voxels)."""
    if sigma_mm <= 0:
        return volume
    sigma_vox = [sigma_mm / s for s in spacing]
    return ndi.gaussian_filter(volume.astype(np.float32, copy=False), sigma_vox)


def otsu_threshold(volume: np.ndarray, classes: int = 2, nbins: int = 256) -> float:
    """Otsu's threshold; with ``classes > 2`` the highest multi-Otsu threshold (brightest class).

    Thin wrapper over :func:`skimage.filters.threshold_otsu` / ``threshold_multiotsu`` so the
    value equals scikit-image's on the same data.
    """
    from skimage.filters import threshold_multiotsu, threshold_otsu

    _check(volume, classes)
    if classes == 2:
        return float(threshold_otsu(volume, nbins=nbins))
    return float(threshold_multiotsu(volume, classes=classes, nbins=nbins)[-1])


def _check(volume: np.ndarray, classes: int) -> None:
    if np.ptp(volume) == 0:
        raise XaimedError(
            "The volume is constant, so no threshold separates anything: check that the right "
            "layer is selected."
        )
    check_otsu_classes(classes)


def check_otsu_classes(classes: int) -> None:
    """Raise :class:`XaimedError` unless ``classes`` (Otsu's number of classes) is a whole
    number of 2 or more; shared by the in-memory and the slab-wise (lazy) Otsu."""
    if int(classes) != classes or classes < 2:
        raise XaimedError(f"classes must be a whole number of 2 or more for Otsu, got {classes}.")


def multi_otsu_thresholds(volume: np.ndarray, classes: int = 3, nbins: int = 256) -> np.ndarray:
    """The ``classes - 1`` thresholds that split the volume into ``classes`` intensity classes
    (scikit-image's :func:`~skimage.filters.threshold_multiotsu`; Otsu's for 2 classes)."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    _check(volume, classes)
    if classes == 2:
        return np.array([threshold_otsu(volume, nbins=nbins)], dtype=float)
    return np.asarray(threshold_multiotsu(volume, classes=classes, nbins=nbins), dtype=float)


def threshold_mask(
    volume: np.ndarray,
    *,
    value: float | None = None,
    percentile: float | None = None,
) -> tuple[np.ndarray, float]:
    """Voxels strictly above an absolute value or a percentile of the volume.

    Returns the mask and the threshold used.
    """
    if (value is None) == (percentile is None):
        raise XaimedError("Give exactly one of value= (absolute) or percentile= (0-100).")
    if percentile is not None:
        if not 0 <= percentile <= 100:
            raise XaimedError(f"percentile must be within 0-100, got {percentile}.")
        value = float(np.percentile(volume, percentile))
    return volume > value, float(value)
