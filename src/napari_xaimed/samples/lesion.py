"""A textured body with 0..N bright lesions, their instance mask and the class (lesion present
or not) a detector should predict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.samples._common import Shape3, Spacing3, _check_geometry
from napari_xaimed.samples.phantom import grid_points, random_phantom


@dataclass
class LesionSample:
    """A lesion volume and its truth.

    Attributes
    ----------
    image : numpy.ndarray
        float32 intensities, ``(z, y, x)``.
    lesions : numpy.ndarray
        uint16 instance labels of the lesions (1..n), 0 elsewhere: the ground-truth mask.
    body : numpy.ndarray
        bool mask of the body outline.
    label : int
        The class a lesion detector should predict: 1 if any lesion is present, else 0.
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.
    centers_mm, radii_mm : list
        Each lesion's centre (mm, ``(z, y, x)``) and radius (mm), in label order.
    seed : int
    """

    image: np.ndarray
    lesions: np.ndarray
    body: np.ndarray
    label: int
    spacing: Spacing3
    centers_mm: list[tuple[float, float, float]]
    radii_mm: list[float]
    seed: int

    @property
    def mask(self) -> np.ndarray:
        """bool lesion mask."""
        return self.lesions > 0


def lesion_volume(
    shape: Shape3 = (64, 64, 64),
    spacing: Spacing3 = (1.0, 1.0, 1.0),
    *,
    n_lesions: int | None = None,
    max_lesions: int = 3,
    lesion_radius_mm: tuple[float, float] = (3.0, 7.0),
    contrast: float = 0.5,
    noise: float = 0.03,
    seed: int = 0,
) -> LesionSample:
    """A textured body with synthetic lesions and its ground truth.

    Parameters
    ----------
    shape : tuple of int
        Volume size ``(z, y, x)``.
    spacing : tuple of float
        Voxel size in mm.
    n_lesions : int, optional
        Number of lesions; 0 gives a lesion-free volume (class 0). Default: drawn from
        ``1..max_lesions``.
    max_lesions : int
        Upper bound when ``n_lesions`` is drawn.
    lesion_radius_mm : (float, float)
        Range of lesion radii.
    contrast : float
        Lesion brightness above the surrounding tissue (tissue is about 0.35-0.7).
    noise : float
        Standard deviation of the added Gaussian noise.
    seed : int
        Seed of all random draws: the same seed gives the same volume.

    Returns
    -------
    LesionSample
    """
    shape, spacing = _check_geometry(shape, spacing)
    rng = np.random.default_rng(seed)
    if n_lesions is None:
        n_lesions = int(rng.integers(1, max_lesions + 1))
    if n_lesions < 0:
        raise XaimedError(f"n_lesions must be 0 or more, got {n_lesions}.")
    phantom = random_phantom(rng, shape, spacing, n_lesions, lesion_radius_mm, contrast)
    points = grid_points(shape, spacing)
    image = phantom.intensity(points) + rng.normal(0.0, noise, shape)
    lesions = phantom.lesion_labels(points)
    return LesionSample(
        image=image.astype(np.float32),
        lesions=lesions,
        body=phantom.body_mask(points),
        label=int(lesions.any()),
        spacing=spacing,
        centers_mm=[tuple(float(c) for c in les.center) for les in phantom.lesions],
        radii_mm=[float(les.semi_axes[0]) for les in phantom.lesions],
        seed=seed,
    )


