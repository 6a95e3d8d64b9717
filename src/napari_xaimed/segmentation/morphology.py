"""Mask clean-up in millimetres: hole filling and opening with an ellipsoidal footprint."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError


def ellipsoid_footprint(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """The voxels within ``radius_mm`` of the centre on a grid of ``spacing``: a ball in mm,
    an ellipsoid in voxels when the spacing is anisotropic.

    Parameters
    ----------
    radius_mm : float
        Radius in mm (> 0).
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.

    Returns
    -------
    numpy.ndarray
        bool array of odd size along each axis, ``2 * floor(radius_mm / s) + 1``.
    """
    if not radius_mm > 0:
        raise XaimedError(f"the radius must be positive (mm), got {radius_mm}.")
    half = [int(np.floor(radius_mm / s + 1e-9)) for s in spacing]
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return z**2 + y**2 + x**2 <= radius_mm**2 * (1 + 1e-9)


def open_mask(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]
              ) -> np.ndarray:
    """Morphological opening with a ball of ``radius_mm``: removes structures thinner than the
    ball's diameter (in mm along each axis) and keeps what the ball fits in.

    The erosion counts the space outside the volume as foreground, so objects cut by the
    volume's edge are not eaten from that edge. The result is a subset of ``mask``.
    """
    footprint = ellipsoid_footprint(radius_mm, spacing)
    eroded = ndi.binary_erosion(mask, structure=footprint, border_value=1)
    return ndi.binary_dilation(eroded, structure=footprint) & mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the cavities of a 3D mask: background not connected to the volume's border."""
    return ndi.binary_fill_holes(mask)
