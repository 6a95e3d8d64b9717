"""Scans larger than memory in a longitudinal explanation: block-mean copies of both, read slab
by slab (:func:`~napari_xaimed.registration.downsample`), so the model sees each whole copy and
the heatmaps lie on the coarse current grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_origin, as_spacing
from napari_xaimed.registration.downsample import downsample

#: Voxels of each downsampled copy by default (the model sees the whole copy).
MAX_VOXELS = 2**21


def coarse_copies(prior: Any, current: Any, *, spacing: Any, origin: Any, prior_spacing: Any,
                  prior_origin: Any, registration: Any, max_voxels: int = MAX_VOXELS
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], dict[str, Any]]:
    """Block-mean copies of ``prior`` and ``current`` of at most ``max_voxels`` voxels each.

    Returns
    -------
    prior, current : numpy.ndarray
        The copies.
    grids : dict
        ``spacing``, ``origin``, ``prior_spacing``, ``prior_origin`` of the copies (mm).
    record : dict
        ``prior_factors``, ``current_factors`` and ``max_voxels``, for the provenance.

    Raises
    ------
    XaimedError
        For a registration given on the full grid (a field or a RegistrationResult): only
        ``None`` (register the copies) or ``"identity"`` apply to the copies.
    """
    if registration is not None and not isinstance(registration, str):
        raise XaimedError(
            "the scans are read lazily (larger than memory) and explained on downsampled "
            "copies, but the registration given lies on the full grid: pass registration=None "
            "(the copies are registered) or 'identity', or explain crops in memory.")
    current_spacing = as_spacing(spacing)
    small_current = downsample(current, spacing=current_spacing, origin=as_origin(origin),
                               max_voxels=max_voxels)
    small_prior = downsample(
        prior, spacing=current_spacing if prior_spacing is None else as_spacing(prior_spacing),
        origin=as_origin(prior_origin), max_voxels=max_voxels)
    grids = {"spacing": small_current.spacing, "origin": small_current.origin,
             "prior_spacing": small_prior.spacing, "prior_origin": small_prior.origin}
    record = {"prior_factors": list(small_prior.factors),
              "current_factors": list(small_current.factors), "max_voxels": int(max_voxels)}
    return np.asarray(small_prior.data), np.asarray(small_current.data), grids, record
