"""A real brain: the MNI152 T1 template that ships inside nilearn (the optional ``[real]`` extra;
nothing is downloaded), with its grey and white matter, and the template moved by a known smooth
deformation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.samples._common import Spacing3
from napari_xaimed.samples.longitudinal import smooth_displacement
from napari_xaimed.samples.phantom import grid_points

REAL_EXTRA = 'pip install "napari-xaimed[real]"'


#: Template voxels above this (of the template's 0-1 range) are brain: nilearn's template is
#: skull-stripped, and its resampled versions hold only interpolation residue (< 1e-17) outside.
BRAIN_THRESHOLD = 0.01


TISSUE_NAMES = {1: "CSF", 2: "GM", 3: "WM"}


def _nilearn_datasets() -> Any:
    try:
        from nilearn import datasets
    except ImportError as exc:
        raise XaimedError(
            "The MNI152 sample needs nilearn, which ships the template inside its package (no "
            f"download): install it with {REAL_EXTRA} (or pip install nilearn).") from exc
    return datasets


@dataclass
class MNI152Sample:
    """The MNI152 T1 template (nilearn's ICBM152 2009a, skull-stripped) and its tissues.

    Attributes
    ----------
    image : numpy.ndarray
        float32 T1 intensities scaled to 0-1, ``(z, y, x)`` = (inferior-superior,
        posterior-anterior, left-right: RAS axes reversed).
    gm_probability, wm_probability : numpy.ndarray
        float32 nilearn grey and white matter probability templates (0-1) on the same grid.
    tissue : numpy.ndarray
        uint8 reference tissue classes inside the brain, the most probable of CSF (1, taken as
        ``1 - GM - WM``), GM (2) and WM (3); 0 outside. The classes are numbered like the
        project's tissue segmentations (by mean T1 intensity, 1 the darkest).
    brain : numpy.ndarray
        bool brain mask (template above :data:`BRAIN_THRESHOLD`).
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.
    translate : tuple of float
        World position (mm) of voxel ``(0, 0, 0)`` along ``(z, y, x)``: the layer ``translate``
        (MNI coordinates, RAS).
    affine : numpy.ndarray
        The NIfTI voxel-to-world matrix as nilearn gives it.
    resolution : float
        The grid's voxel size in mm.
    """

    image: np.ndarray
    gm_probability: np.ndarray
    wm_probability: np.ndarray
    tissue: np.ndarray
    brain: np.ndarray
    spacing: Spacing3
    translate: Spacing3
    affine: np.ndarray
    resolution: float

    @property
    def gm(self) -> np.ndarray:
        """bool grey-matter mask (reference class 2)."""
        return self.tissue == 2

    @property
    def wm(self) -> np.ndarray:
        """bool white-matter mask (reference class 3)."""
        return self.tissue == 3


def _check_resolution(resolution: Any) -> int:
    if isinstance(resolution, bool) or int(resolution) != resolution or not 1 <= resolution <= 8:
        raise XaimedError(
            f"resolution must be a whole number of mm from 1 to 8, got {resolution!r}.")
    return int(resolution)


def mni152(resolution: int = 2) -> MNI152Sample:
    """The MNI152 T1 brain template with grey and white matter, from nilearn (no download).

    Needs the optional extra ``napari-xaimed[real]`` (nilearn). The template, and nilearn's grey
    and white matter probability templates, are read with
    ``nilearn.datasets.load_mni152_template`` / ``load_mni152_gm_template`` /
    ``load_mni152_wm_template`` and converted to ``(z, y, x)`` by
    :func:`napari_xaimed.io.volume_from_nifti`, the conversion
    :func:`~napari_xaimed.io.read_volume` applies to NIfTI files.

    Parameters
    ----------
    resolution : int
        Isotropic voxel size in mm (nilearn resamples its 1 mm template): 1 gives 189 x 233 x
        197 voxels, 2 gives 95 x 117 x 99, 4 gives 48 x 59 x 50.

    Returns
    -------
    MNI152Sample

    Raises
    ------
    XaimedError
        If nilearn is not installed (the message names ``pip install "napari-xaimed[real]"``)
        or the resolution is not a whole number of mm from 1 to 8.

    Notes
    -----
    nilearn's binary ``load_mni152_gm_mask`` and ``load_mni152_wm_mask`` (probability above 0.2,
    then a closing) overlap: most of the white-matter mask lies inside the grey-matter one, so
    they cannot both be right for one voxel. :attr:`MNI152Sample.tissue` takes the most probable
    class instead, which gives each brain voxel one tissue.
    """
    from napari_xaimed.io import volume_from_nifti

    resolution = _check_resolution(resolution)
    datasets = _nilearn_datasets()
    template = volume_from_nifti(datasets.load_mni152_template(resolution=resolution), "MNI152")
    gm = volume_from_nifti(datasets.load_mni152_gm_template(resolution=resolution), "MNI152 GM")
    wm = volume_from_nifti(datasets.load_mni152_wm_template(resolution=resolution), "MNI152 WM")
    image = template.data.astype(np.float32)
    gm_p = np.clip(gm.data, 0.0, 1.0).astype(np.float32)
    wm_p = np.clip(wm.data, 0.0, 1.0).astype(np.float32)
    brain = image > BRAIN_THRESHOLD
    csf_p = np.clip(1.0 - gm_p - wm_p, 0.0, 1.0)
    tissue = (np.argmax(np.stack([csf_p, gm_p, wm_p]), axis=0) + 1).astype(np.uint8)
    tissue[~brain] = 0
    return MNI152Sample(
        image=image, gm_probability=gm_p, wm_probability=wm_p, tissue=tissue, brain=brain,
        spacing=template.spacing, translate=template.translate, affine=template.affine,
        resolution=float(resolution),
    )


@dataclass
class MNI152DeformedSample:
    """The MNI152 template (``moving``) and a copy moved by a known smooth deformation (``fixed``).

    Attributes
    ----------
    fixed : numpy.ndarray
        float32 deformed copy: the 1 mm template sampled (trilinear) at ``p + displacement(p)``
        for every voxel centre ``p`` of the grid, so it is not the moving image resampled by the
        interpolator a registration uses.
    moving : numpy.ndarray
        float32 template at ``resolution`` (nilearn's).
    displacement : numpy.ndarray
        float32 ``(z, y, x, 3)`` in mm, components in ``(z, y, x)`` order, on the fixed grid,
        pull-back: ``fixed(p) = moving(p + displacement(p))``, the field a registration of
        ``moving`` to ``fixed`` should recover.
    fixed_tissue, moving_tissue : numpy.ndarray
        uint8 reference tissue classes (see :class:`MNI152Sample`) of each image; the fixed ones
        are the moving ones carried through the field (label-preserving interpolation).
    fixed_brain : numpy.ndarray
        bool brain mask of the fixed image.
    spacing, translate : tuple of float
        The grid of both images (mm, ``(z, y, x)``).
    seed : int
    """

    fixed: np.ndarray
    moving: np.ndarray
    displacement: np.ndarray
    fixed_tissue: np.ndarray
    moving_tissue: np.ndarray
    fixed_brain: np.ndarray
    spacing: Spacing3
    translate: Spacing3
    seed: int


def mni152_deformed(
    resolution: int = 2,
    *,
    max_displacement_mm: float = 3.0,
    wavelength_mm: tuple[float, float] = (40.0, 70.0),
    seed: int = 0,
) -> MNI152DeformedSample:
    """The MNI152 template and a copy moved by a known smooth displacement field.

    The field is :func:`smooth_displacement` (a few plane waves per component) evaluated at the
    world (MNI) position of each voxel, so one seed gives the same deformation at every
    resolution.

    Parameters
    ----------
    resolution : int
        Voxel size in mm (see :func:`mni152`).
    max_displacement_mm : float
        Amplitude of each component of the field (its largest gradient stays below about
        ``max_displacement_mm * 2 pi / min(wavelength_mm)``, free of folding for the defaults).
    wavelength_mm : (float, float)
        Range of the plane waves' wavelengths.
    seed : int

    Returns
    -------
    MNI152DeformedSample
        ``fixed(p) == moving(p + displacement(p))`` up to interpolation.
    """
    from napari_xaimed.registration.fields import resample

    if not np.isfinite(max_displacement_mm) or max_displacement_mm < 0:
        raise XaimedError(
            f"max_displacement_mm must be 0 or more (mm), got {max_displacement_mm}.")
    sample = mni152(resolution)
    fine = sample if sample.resolution == 1 else mni152(1)
    shape = sample.image.shape
    points = grid_points(shape, sample.spacing) + np.asarray(sample.translate)
    rng = np.random.default_rng(seed)
    displacement = smooth_displacement(points, rng, max_displacement_mm,
                                       wavelength_mm).astype(np.float32)
    grid = {"fixed_spacing": sample.spacing, "fixed_origin": sample.translate}
    fixed = resample(fine.image, shape, displacement, **grid, moving_spacing=fine.spacing,
                     moving_origin=fine.translate)
    fixed_tissue = resample(sample.tissue, shape, displacement, **grid,
                            moving_spacing=sample.spacing, moving_origin=sample.translate,
                            interpolation="label")
    return MNI152DeformedSample(
        fixed=fixed, moving=sample.image, displacement=displacement, fixed_tissue=fixed_tissue,
        moving_tissue=sample.tissue, fixed_brain=fixed > BRAIN_THRESHOLD,
        spacing=sample.spacing, translate=sample.translate, seed=seed,
    )
