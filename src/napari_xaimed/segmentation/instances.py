"""Masks to instance labels: connected components with a minimum size in mm^3."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._errors import XaimedError
from napari_xaimed._validate import as_spacing, as_volume


def split_instances(
    mask: np.ndarray,
    spacing: tuple[float, float, float] | None = None,
    min_size_mm3: float = 0.0,
    connectivity: int = 26,
) -> np.ndarray:
    """Label the connected components of a mask, dropping those smaller than ``min_size_mm3``.

    Parameters
    ----------
    mask : numpy.ndarray
        3D mask (nonzero = foreground).
    spacing : tuple of float, optional
        Voxel size in mm, ``(z, y, x)``; 1 mm when omitted.
    min_size_mm3 : float
        Components with a smaller volume are removed.
    connectivity : {6, 18, 26}
        Neighbourhood of the components.

    Returns
    -------
    numpy.ndarray
        Instance labels ``1..n`` numbered in scan order, 0 for background; uint16 when ``n``
        fits, else uint32.
    """
    mask = as_volume(mask, "mask") != 0
    spacing = as_spacing(spacing)
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise XaimedError(f"connectivity must be 6, 18 or 26, got {connectivity}.")
    structure = ndi.generate_binary_structure(3, rank)
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
