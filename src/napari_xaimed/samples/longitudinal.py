"""A prior (``moving``) and a current (``fixed``) scan of the same anatomy, the current one
deformed by a known smooth displacement plus a small affine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.samples._common import Shape3, Spacing3, _check_geometry
from napari_xaimed.samples.phantom import Ellipsoid, Phantom, grid_points, random_phantom


@dataclass
class LongitudinalSample:
    """A prior/current pair with the known deformation between them.

    Attributes
    ----------
    fixed : numpy.ndarray
        The current scan (float32): the anatomy sampled at ``p + displacement(p)``.
    moving : numpy.ndarray
        The prior scan (float32): the undeformed anatomy.
    fixed_labels, moving_labels : numpy.ndarray
        uint8 organ labels (1..3) of each scan, for Dice.
    displacement : numpy.ndarray
        float32 ``(z, y, x, 3)`` in mm, components in ``(z, y, x)`` order, on the fixed grid,
        pull-back: ``fixed(p) = moving(p + displacement(p))``.
    body : numpy.ndarray
        bool body mask on the fixed grid.
    spacing : tuple of float
        Voxel size in mm of both scans.
    affine : numpy.ndarray
        The 4x4 affine part (mm, ``(z, y, x)``) of the mapping, included in ``displacement``.
    seed : int
    new_lesion : numpy.ndarray or None
        bool mask on the fixed grid of the lesion that appeared in the current scan (with
        ``new_lesion_radius_mm > 0``), else None.
    """

    fixed: np.ndarray
    moving: np.ndarray
    fixed_labels: np.ndarray
    moving_labels: np.ndarray
    displacement: np.ndarray
    body: np.ndarray
    spacing: Spacing3
    affine: np.ndarray
    seed: int
    new_lesion: np.ndarray | None = None


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def smooth_displacement(
    points: np.ndarray,
    rng: np.random.Generator,
    amplitude_mm: float,
    wavelength_mm: tuple[float, float] = (40.0, 70.0),
    n_waves: int = 4,
) -> np.ndarray:
    """A smooth random field (mm) at ``points`` from a few plane waves per component.

    The largest gradient is bounded by ``amplitude_mm * 2 pi / min(wavelength)``, which keeps the
    mapping free of folding for the defaults (about 0.5 at 3 mm).
    """
    field_mm = np.zeros(points.shape, dtype=np.float64)
    for component in range(3):
        for _ in range(n_waves):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            k = direction * 2 * np.pi / rng.uniform(*wavelength_mm)
            amp = amplitude_mm / n_waves * rng.uniform(0.5, 1.0)
            field_mm[..., component] += amp * np.sin(points @ k + rng.uniform(0, 2 * np.pi))
    return field_mm


def longitudinal_pair(
    shape: Shape3 = (56, 64, 64),
    spacing: Spacing3 = (1.5, 1.0, 1.0),
    *,
    max_displacement_mm: float = 3.0,
    max_rotation_deg: float = 3.0,
    max_translation_mm: float = 2.0,
    max_scaling: float = 0.02,
    n_lesions: int = 2,
    noise: float = 0.02,
    new_lesion_radius_mm: float = 0.0,
    seed: int = 0,
) -> LongitudinalSample:
    """A prior scan and the same anatomy moved by a known smooth deformation and small affine.

    Parameters
    ----------
    shape, spacing : tuple
        Grid of both scans (``(z, y, x)``, mm).
    max_displacement_mm : float
        Amplitude of the smooth (non-affine) part.
    max_rotation_deg, max_translation_mm, max_scaling : float
        Bounds of the affine part: rotation about the volume centre, translation per axis and
        isotropic scaling.
    n_lesions : int
        Lesions in the anatomy (identical in both scans).
    noise : float
        Independent Gaussian noise added to each scan.
    new_lesion_radius_mm : float
        When positive, the current scan also shows a lesion of this radius that the prior does
        not (a change for longitudinal explanations; its mask is ``new_lesion``). It is drawn
        from its own random stream, so the other outputs stay those of the same seed without it
        (outside the lesion).
    seed : int

    Returns
    -------
    LongitudinalSample
        ``fixed(p) == moving(p + displacement(p))`` up to noise and interpolation (and the new
        lesion).
    """
    shape, spacing = _check_geometry(shape, spacing)
    rng = np.random.default_rng(seed)
    phantom = random_phantom(rng, shape, spacing, n_lesions)
    points = grid_points(shape, spacing)
    center = (np.asarray(shape, float) - 1) / 2 * np.asarray(spacing, float)

    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = 1.0 + rng.uniform(-max_scaling, max_scaling)
    linear = scale * _rotation(rng.normal(size=3), angle)
    translation = rng.uniform(-max_translation_mm, max_translation_mm, 3)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = center + translation - linear @ center

    mapped = points @ linear.T + affine[:3, 3]
    mapped += smooth_displacement(points, rng, max_displacement_mm)
    displacement = mapped - points

    current = phantom
    new_lesion = None
    if new_lesion_radius_mm > 0:
        current = _with_new_lesion(phantom, float(new_lesion_radius_mm),
                                   np.random.default_rng([seed, 1]))
        new_lesion = current.lesions[-1].normalised_radius(mapped) < 1.0
    fixed = current.intensity(mapped) + rng.normal(0.0, noise, shape)
    moving = phantom.intensity(points) + rng.normal(0.0, noise, shape)
    return LongitudinalSample(
        fixed=fixed.astype(np.float32),
        moving=moving.astype(np.float32),
        fixed_labels=phantom.organ_labels(mapped),
        moving_labels=phantom.organ_labels(points),
        displacement=displacement.astype(np.float32),
        body=phantom.body_mask(mapped),
        spacing=spacing,
        affine=affine,
        seed=seed,
        new_lesion=new_lesion,
    )


def _with_new_lesion(phantom: Phantom, radius: float, rng: np.random.Generator) -> Phantom:
    """A copy of ``phantom`` with one more lesion of ``radius`` (mm) inside the body, clear
    of the others by 3 mm."""
    body = phantom.body
    for _ in range(5000):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        reach = rng.uniform(0.0, 1.0) ** (1 / 3)
        pos = body.center + direction * reach * np.maximum(body.semi_axes - radius - 3.0, 1.0)
        if all(np.linalg.norm(pos - other.center) >= radius + other.semi_axes[0] + 3.0
               for other in phantom.lesions):
            break
    else:
        raise XaimedError(f"Could not place a new lesion of {radius} mm beside the others: "
                          "use a smaller one, fewer lesions or a larger volume.")
    value = phantom.lesions[0].value if phantom.lesions else 0.45
    lesion = Ellipsoid(pos, np.full(3, radius), value=value, label=len(phantom.lesions) + 1)
    return dataclasses.replace(phantom, lesions=[*phantom.lesions, lesion])
