"""Radiomics-style features of a region, for regression concept vectors
(:func:`napari_xaimed.concepts.rcv.regression_concepts`).

Computed with numpy, scipy and scikit-image, following the definitions of the Image Biomarker
Standardisation Initiative (IBSI) and pyradiomics (which does not build on every machine, so it
is no dependency): shape (volume, surface area from a marching-cubes mesh, sphericity) and first
order (mean, standard deviation, skewness, excess kurtosis, entropy of a fixed-bin histogram)
intensity features in the region, and GLCM texture (contrast, homogeneity, correlation, energy)
averaged over the 13 directions of the 3D neighbourhood.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_spacing

#: The features :func:`region_features` returns, in order.
FEATURES = ("volume_mm3", "surface_mm2", "sphericity", "mean", "std", "skewness", "kurtosis",
            "entropy", "glcm_contrast", "glcm_homogeneity", "glcm_correlation", "glcm_energy")
#: The 13 unique directions of a voxel's 26-neighbourhood (the other 13 are their opposites).
DIRECTIONS = ((0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (0, 1, -1), (1, 0, 1), (1, 0, -1),
              (1, 1, 0), (1, -1, 0), (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1))


def region_features(volume: Any, mask: Any, *, spacing: Any = None, bins: int = 32
                    ) -> dict[str, float]:
    """Shape, first-order and texture features of the region ``mask`` of ``volume``.

    Parameters
    ----------
    volume : array_like
        3D intensities ``(z, y, x)``.
    mask : array_like of bool
        The region (e.g. a lesion), on the volume's grid.
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``; 1 mm when omitted.
    bins : int
        Grey levels for the histogram entropy and the GLCM (fixed bin count over the
        region's intensity range, as pyradiomics' ``binCount``).

    Returns
    -------
    dict of str to float
        The :data:`FEATURES`.
    """
    from scipy import stats  # scipy.stats imports slowly: only when used

    image = np.asarray(volume, dtype=np.float64)
    region = np.asarray(mask).astype(bool)
    if image.ndim != 3:
        raise XaimedError(f"the volume must be 3D (z, y, x), got shape {image.shape}.")
    if region.shape != image.shape:
        raise XaimedError(f"the mask {region.shape} must have the volume's shape "
                          f"{image.shape}.")
    if not region.any():
        raise XaimedError("the mask is empty: features need a region of at least one voxel.")
    if not np.all(np.isfinite(image[region])):
        raise XaimedError("the volume holds NaN or infinite values inside the region.")
    if int(bins) < 2:
        raise XaimedError(f"bins must be at least 2, got {bins}.")
    spacing_mm = as_spacing(spacing)
    values = image[region]
    volume_mm3 = float(region.sum() * np.prod(spacing_mm))
    surface = surface_area(region, spacing_mm)
    # IBSI 3.1.3: sphericity = (36 pi V^2)^(1/3) / A; 1 for a ball
    sphericity = float((36 * np.pi * volume_mm3 ** 2) ** (1 / 3) / surface) if surface else 0.0
    levels = _grey_levels(values, int(bins))
    counts = np.bincount(levels, minlength=int(bins))
    p = counts[counts > 0] / values.size
    constant = np.ptp(values) == 0
    features = {
        "volume_mm3": volume_mm3,
        "surface_mm2": surface,
        "sphericity": sphericity,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "skewness": 0.0 if constant else float(stats.skew(values)),
        # IBSI "Kurtosis" (IPH6) is the excess kurtosis: Pearson's minus 3, 0 for a normal
        # distribution (pyradiomics reports Pearson's, 3 higher)
        "kurtosis": 0.0 if constant else float(stats.kurtosis(values, fisher=True, bias=True)),
        "entropy": float(-(p * np.log2(p)).sum()),
    }
    grey = np.zeros(image.shape, np.int64)
    grey[region] = levels
    features.update(glcm_features(grey, region, int(bins)))
    return features


def _grey_levels(values: np.ndarray, bins: int) -> np.ndarray:
    """Levels 0..bins-1 by a fixed bin count over the values' range (pyradiomics'
    ``binCount``): the maximum falls in the last bin."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape, np.int64)
    levels = np.floor((values - low) / (high - low) * bins).astype(np.int64)
    return np.clip(levels, 0, bins - 1)


def surface_area(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Area in mm² of the marching-cubes mesh of the region's boundary (as pyradiomics)."""
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(mask.astype(np.float32), 1)  # a region touching the border is closed
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing)
    return float(mesh_surface_area(verts, faces))


def glcm(grey: np.ndarray, region: np.ndarray, levels: int,
         direction: tuple[int, int, int]) -> np.ndarray:
    """Symmetric grey-level co-occurrence counts ``(levels, levels)`` of voxel pairs one step
    along ``direction``, both inside the region."""
    starts, ends = [], []
    for step, size in zip(direction, grey.shape, strict=True):
        starts.append(slice(max(0, -step), size - max(0, step)))
        ends.append(slice(max(0, step), size - max(0, -step)))
    a, b = tuple(starts), tuple(ends)
    both = region[a] & region[b]
    first, second = grey[a][both], grey[b][both]
    counts = np.bincount(first * levels + second, minlength=levels * levels)
    counts = counts.reshape(levels, levels).astype(np.float64)
    return counts + counts.T


def glcm_features(grey: np.ndarray, region: np.ndarray, levels: int) -> dict[str, float]:
    """Contrast, homogeneity (inverse difference moment), correlation and energy (angular
    second moment) of the normalised GLCM, each averaged over the 13 directions that have
    any pair (pyradiomics' default aggregation). A region without pairs, or of one grey
    level, has contrast 0, homogeneity and energy 1, correlation 1 (IBSI's convention)."""
    i, j = np.indices((levels, levels), dtype=np.float64)
    per_direction = []
    for direction in DIRECTIONS:
        counts = glcm(grey, region, levels, direction)
        total = counts.sum()
        if total == 0:
            continue
        p = counts / total
        mu = float((i * p).sum())
        var = float(((i - mu) ** 2 * p).sum())
        correlation = 1.0 if var == 0 else float(((i - mu) * (j - mu) * p).sum() / var)
        per_direction.append((float(((i - j) ** 2 * p).sum()),
                              float((p / (1 + (i - j) ** 2)).sum()),
                              correlation,
                              float((p ** 2).sum())))
    if not per_direction:
        return {"glcm_contrast": 0.0, "glcm_homogeneity": 1.0, "glcm_correlation": 1.0,
                "glcm_energy": 1.0}
    mean = np.mean(per_direction, axis=0)
    return {"glcm_contrast": float(mean[0]), "glcm_homogeneity": float(mean[1]),
            "glcm_correlation": float(mean[2]), "glcm_energy": float(mean[3])}


def case_features(case_list: Any, *, image: str = "image", mask: str = "mask",
                  bins: int = 32) -> tuple[list[np.ndarray], pd.DataFrame]:
    """The images of a cohort's case list and the :data:`FEATURES` of each case's mask.

    Parameters
    ----------
    case_list : str or pathlib.Path
        The cohort CSV (``case_id`` and file columns; see
        :func:`napari_xaimed.io.cases.read_cases`).
    image, mask : str
        The file columns of the image and of the region (e.g. a lesion mask).
    bins : int
        As :func:`region_features`.

    Returns
    -------
    volumes : list of numpy.ndarray
        The images, in the list's order (for
        :func:`~napari_xaimed.concepts.rcv.regression_concepts`).
    features : pandas.DataFrame
        One row per case, indexed by ``case_id``, in mm from each file's own spacing.
    """
    from napari_xaimed.io import read_volume
    from napari_xaimed.io.cases import read_cases

    volumes, rows = [], []
    for case in read_cases(case_list, (image, mask)):
        picture, region = read_volume(case.files[image]), read_volume(case.files[mask])
        if picture.data.shape != region.data.shape:
            raise XaimedError(f"case {case.case_id}: the {mask} {region.data.shape} and the "
                              f"{image} {picture.data.shape} differ in shape.")
        try:
            row = region_features(picture.data, region.data != 0, spacing=picture.spacing,
                                  bins=bins)
        except XaimedError as exc:
            raise XaimedError(f"case {case.case_id}: {exc}") from exc
        volumes.append(np.asarray(picture.data, np.float32))
        rows.append({"case_id": case.case_id, **row})
    return volumes, pd.DataFrame(rows).set_index("case_id")
