"""Overlap of two masks (Dice), shared by evaluation, registration quality, the demo and the
training of the bundled segmenter."""

from __future__ import annotations

import numpy as np

from napari_xaimed._core.errors import XaimedError


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2|A & B| / (|A| + |B|)`` of two masks (nonzero voxels), 1.0 when both are
    empty.

    Parameters
    ----------
    a, b : numpy.ndarray
        Masks or label maps of one shape; every nonzero voxel counts.

    Returns
    -------
    float
        The Dice coefficient in ``[0, 1]``.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise XaimedError(f"masks differ in shape: {a.shape} vs {b.shape}; Dice compares two "
                          "masks on one grid (resample one onto the other's grid first).")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
