"""Masks to instance labels: connected components with a minimum size in mm^3, and watershed
splitting of touching objects on the distance transform in mm."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.segmentation.morphology import ellipsoid_footprint

SPLITS = (None, "watershed")
_RANK = {6: 1, 18: 2, 26: 3}


def _rank(connectivity: int) -> int:
    rank = _RANK.get(int(connectivity))
    if rank is None:
        raise XaimedError(f"connectivity must be 6, 18 or 26, got {connectivity}.")
    return rank


def watershed_split(
    mask: np.ndarray,
    spacing: tuple[float, float, float] | None = None,
    min_distance_mm: float = 5.0,
    connectivity: int = 26,
) -> tuple[np.ndarray, int]:
    """Split touching objects: watershed of the distance to the background, from its peaks.

    The distance transform is in mm (``sampling=spacing``). A peak is a voxel whose distance is
    the largest within ``min_distance_mm`` (a ball in mm); a connected plateau of such voxels is
    one peak. Each peak grows into one instance over the inverted distance, inside the mask, so
    two balls joined by a neck split at the neck and one ball stays whole.

    Parameters
    ----------
    mask : numpy.ndarray
        3D mask (nonzero = foreground).
    spacing : tuple of float, optional
        Voxel size in mm, ``(z, y, x)``; 1 mm when omitted.
    min_distance_mm : float
        Peaks closer than this are not told apart: about the radius of the smallest object to
        keep separate.
    connectivity : {6, 18, 26}
        Neighbourhood of the flooding.

    Returns
    -------
    labels : numpy.ndarray
        uint32 instance labels ``1..n``, 0 for background.
    n : int
        Number of instances.
    """
    from skimage.segmentation import watershed

    mask = as_volume(mask, "mask") != 0
    spacing = as_spacing(spacing)
    rank = _rank(connectivity)
    if not min_distance_mm > 0:
        raise XaimedError(f"min_distance_mm must be positive, got {min_distance_mm}.")
    if not mask.any():
        return np.zeros(mask.shape, np.uint32), 0
    distance = ndi.distance_transform_edt(mask, sampling=spacing)
    footprint = ellipsoid_footprint(min_distance_mm, spacing)
    peaks = mask & (distance == ndi.maximum_filter(distance, footprint=footprint,
                                                   mode="constant", cval=0.0))
    markers, _ = ndi.label(peaks, structure=ndi.generate_binary_structure(3, 3),
                           output=np.int32)
    labels = watershed(-distance, markers, mask=mask,
                       connectivity=ndi.generate_binary_structure(3, rank))
    return labels.astype(np.uint32), int(labels.max())


def split_instances(
    mask: np.ndarray,
    spacing: tuple[float, float, float] | None = None,
    min_size_mm3: float = 0.0,
    connectivity: int = 26,
    split: str | None = None,
    min_distance_mm: float = 5.0,
) -> np.ndarray:
    """Label the connected components of a mask, dropping those smaller than ``min_size_mm3``.

    Parameters
    ----------
    mask : numpy.ndarray
        3D mask (nonzero = foreground).
    spacing : tuple of float, optional
        Voxel size in mm, ``(z, y, x)``; 1 mm when omitted.
    min_size_mm3 : float
        Instances with a smaller volume are removed.
    connectivity : {6, 18, 26}
        Neighbourhood of the components.
    split : {None, "watershed"}
        ``"watershed"`` also splits touching objects (:func:`watershed_split`).
    min_distance_mm : float
        The watershed's minimum distance between object centres, in mm.

    Returns
    -------
    numpy.ndarray
        Instance labels ``1..n`` (numbered in scan order for plain components), 0 for
        background; uint16 when ``n`` fits, else uint32.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((10, 10, 10), bool); mask[1:4, 1:4, 1:4] = True
    >>> int(split_instances(mask, spacing=(2.0, 1.0, 1.0), min_size_mm3=50).max())
    1
    """
    mask = as_volume(mask, "mask") != 0
    spacing = as_spacing(spacing)
    if split not in SPLITS:
        raise XaimedError(f"split must be None or 'watershed', got {split!r}.")
    if split == "watershed":
        labels, n = watershed_split(mask, spacing, min_distance_mm, connectivity)
    else:
        structure = ndi.generate_binary_structure(3, _rank(connectivity))
        labels, n = ndi.label(mask, structure=structure, output=np.uint32)
    if n and min_size_mm3 > 0:
        voxel_mm3 = float(np.prod(spacing))
        sizes = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3
        keep = sizes >= min_size_mm3
        keep[0] = False
        relabel = np.zeros(n + 1, dtype=np.uint32)
        relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
        labels = relabel[labels]
        n = int(keep.sum())
    return labels.astype(np.uint16) if n < 2**16 else labels
