"""Register a moving volume to a fixed one with ANTsPy, in a spawned process."""

from __future__ import annotations

from typing import Any

from napari_xaimed._core.arrays import is_lazy
from napari_xaimed._core.progress import Steps, run_steps
from napari_xaimed.registration.in_memory import (  # noqa: F401 - also importable from here, as before
    prewarm,
    register_in_memory_steps,
)
from napari_xaimed.registration.lazy import LazyRegistration, register_lazy_steps
from napari_xaimed.registration.result import (  # noqa: F401 - also importable from here, as before
    RegistrationResult,
    Vec3,
)


def register_steps(fixed: Any, moving: Any, **kwargs: Any
                   ) -> Steps[RegistrationResult | LazyRegistration]:
    """Generator form of :func:`register` (yields progress, returns the result).

    numpy images are registered as they are
    (:func:`~napari_xaimed.registration.in_memory.register_in_memory_steps`); if either is a
    dask array (a Zarr store or a NIfTI larger than memory), both go through downsampled
    copies (:func:`~napari_xaimed.registration.register_lazy_steps`, which also takes
    ``max_voxels``, ``shrink``, ``out`` and ``slab``) and a
    :class:`~napari_xaimed.registration.LazyRegistration` comes back.
    """
    if is_lazy(fixed) or is_lazy(moving):
        return (yield from register_lazy_steps(fixed, moving, **kwargs))
    return (yield from register_in_memory_steps(fixed, moving, **kwargs))


def register(fixed: Any, moving: Any, **kwargs: Any) -> RegistrationResult | LazyRegistration:
    """Align ``moving`` to ``fixed`` with ANTsPy and return the deformation on the fixed grid.

    ANTs runs in a spawned process (it holds the GIL, which would freeze a napari viewer), with
    its transform files in a temporary folder that is always removed.

    Parameters
    ----------
    fixed, moving : numpy.ndarray or dask.array.Array
        3D ``(z, y, x)`` images; their shapes and spacings may differ. If either is a dask
        array (larger than memory), both are registered through downsampled copies by
        :func:`~napari_xaimed.registration.register_lazy` (``max_voxels``, ``shrink``,
        ``out``, ``slab``), which returns a :class:`~napari_xaimed.registration.LazyRegistration`.
    fixed_spacing, moving_spacing : tuple of float, optional
        Voxel sizes in mm (napari ``scale``); 1 mm when omitted.
    fixed_origin, moving_origin : tuple of float, optional
        World position (mm) of voxel ``(0, 0, 0)`` (napari ``translate``); 0 when omitted.
    transform : str
        One of :data:`~napari_xaimed.registration.params.TRANSFORMS` (``"Rigid"``,
        ``"Affine"``, ``"SyN"``, ``"SyNRA"``, ``"SyNOnly"``, ``"ElasticSyN"``, the quick SyN
        preset ``"QuickSyN"``, ...).
    seed : int or None
        With a seed (default 0), ANTs runs single-threaded with a fixed random seed, so two
        runs give bit-identical fields. None: unseeded and multi-threaded.
    threads : int, optional
        ITK threads; default 1 with a seed (reproducible), all cores without. More than one
        thread makes results differ slightly from run to run.
    fixed_mask, moving_mask : numpy.ndarray, optional
        Regions (nonzero) the similarity metric looks at.
    fixed_labels, moving_labels, fixed_points, moving_points : optional
        Label maps and corresponding landmarks (world mm, ``(n, 3)``) for the Dice and TRE
        figures in ``metrics``.
    transforms_dir : path, optional
        Keep ANTs' transform files (``.mat`` and warp NIfTI, forward and inverse) here.
    **params
        Tuning: ``iterations``, ``metric``, ``sampling``, ``gradient_step``, ``flow_sigma``,
        ``total_sigma`` (see :func:`~napari_xaimed.registration.params.ants_arguments`).

    Returns
    -------
    RegistrationResult or LazyRegistration
    """
    return run_steps(register_steps(fixed, moving, **kwargs))
