"""Register a moving volume to a fixed one with ANTsPy, in a spawned process."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.spawned import prewarm as _prewarm
from napari_xaimed._core.spawned import run_spawned
from napari_xaimed._core.validate import as_origin, as_spacing, as_volume
from napari_xaimed.io.grid import Grid, same_grid
from napari_xaimed.io.lazy import slab_size, z_slabs
from napari_xaimed.registration import ants_job
from napari_xaimed.registration.fields import (
    displacement_vectors,
    jacobian_determinant,
    jacobian_summary,
    resample,
    sample_field,
    warped_grid,
)
from napari_xaimed.registration.params import (
    DEFORMABLE,
    QUICK_SYN,
    STAGES,
    ants_arguments,
    ants_seed,
    transform_name,
)
from napari_xaimed.registration.quality import (
    dice_per_label,
    mutual_information,
    ncc,
    target_registration_error,
)

Vec3 = tuple[float, float, float]


@dataclass
class RegistrationResult:
    """A registration's outputs, all on the fixed grid.

    Attributes
    ----------
    warped : numpy.ndarray
        The moving image resampled into the fixed space (ANTs' linear interpolation).
    displacement : numpy.ndarray
        ``(z, y, x, 3)`` mm, pull-back: the fixed point ``p`` comes from ``p + u(p)`` in the
        moving image; the affine and deformable transforms composed into one field.
    jacobian : numpy.ndarray
        Determinant of the Jacobian of ``p -> p + u(p)``, sign kept (<= 0: folded).
    metrics : dict
        Quality before and after (see :meth:`quality`).
    """

    warped: np.ndarray
    displacement: np.ndarray
    jacobian: np.ndarray
    transform: str
    fixed_spacing: Vec3
    fixed_origin: Vec3
    moving_spacing: Vec3
    moving_origin: Vec3
    moving_shape: tuple[int, int, int]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    transform_files: list[str] = field(default_factory=list)

    @property
    def folded(self) -> np.ndarray:
        """Voxels where the mapping folds (Jacobian determinant <= 0), as uint8 0/1."""
        return (self.jacobian <= 0).astype(np.uint8)

    def apply(self, array: np.ndarray, interpolation: str = "linear", fill: float = 0.0
              ) -> np.ndarray:
        """Carry a volume on the moving grid (labels, heatmap, image) into the fixed space.

        ``interpolation``: ``"linear"`` for images and heatmaps, ``"label"`` (label-preserving
        linear: each voxel takes the label with the largest interpolated share) or
        ``"nearest"`` for label maps.
        """
        array = as_volume(array, "the volume to warp", allow_nan=interpolation != "label")
        if array.shape != self.moving_shape:
            raise XaimedError(
                f"the volume to warp has shape {array.shape}, the moving image {self.moving_shape}:"
                " only volumes on the moving image's grid can be carried along."
            )
        return resample(array, self.jacobian.shape, self.displacement,
                        fixed_spacing=self.fixed_spacing, fixed_origin=self.fixed_origin,
                        moving_spacing=self.moving_spacing, moving_origin=self.moving_origin,
                        interpolation=interpolation, fill=fill)

    def before(self, array: np.ndarray, interpolation: str = "linear") -> np.ndarray:
        """A moving-grid volume on the fixed grid with no registration (world coordinates)."""
        array = np.asarray(array)
        shape = self.jacobian.shape
        if array.shape == shape and same_grid(Grid(shape, self.fixed_spacing, self.fixed_origin),
                                              Grid(shape, self.moving_spacing,
                                                   self.moving_origin)):
            return array  # one grid (within the tolerances of grid.py): nothing to resample
        return resample(np.asarray(array), self.jacobian.shape, None,
                        fixed_spacing=self.fixed_spacing, fixed_origin=self.fixed_origin,
                        moving_spacing=self.moving_spacing, moving_origin=self.moving_origin,
                        interpolation=interpolation)

    def vectors(self, step: int = 8, min_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Vectors layer data (voxel units, layer ``scale`` = fixed spacing) and lengths in mm;
        see :func:`~napari_xaimed.registration.fields.displacement_vectors`."""
        return displacement_vectors(self.displacement, step, self.fixed_spacing, min_mm)

    def grid(self, grid_mm: float = 5.0, line_mm: float | None = None) -> np.ndarray:
        """A moving-space grid seen through the field (see
        :func:`~napari_xaimed.registration.fields.warped_grid`)."""
        return warped_grid(self.displacement, self.fixed_spacing, self.fixed_origin,
                           grid_mm=grid_mm, line_mm=line_mm)

    def quality(self, fixed: np.ndarray, moving: np.ndarray, *,
                fixed_labels: np.ndarray | None = None, moving_labels: np.ndarray | None = None,
                fixed_points: np.ndarray | None = None, moving_points: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> dict[str, Any]:
        """Quality figures before (moving taken as is, in world coordinates) and after.

        NCC and mutual information of the fixed image with the moving one (over ``mask`` of
        the fixed grid when given); Jacobian min/max/mean/std and folded share; Dice per label
        when both label maps are given (the moving labels carried with ``"label"``
        interpolation); target registration error (mm) when corresponding landmarks in world
        mm are given.
        """
        fixed = np.asarray(fixed)
        if fixed.shape != self.jacobian.shape:
            raise XaimedError(f"the fixed image {fixed.shape} is not on this result's grid "
                              f"{self.jacobian.shape}.")
        before = self.before(moving)
        out: dict[str, Any] = {
            "ncc_before": ncc(fixed, before, mask), "ncc_after": ncc(fixed, self.warped, mask),
            "mi_before": mutual_information(fixed, before, mask),
            "mi_after": mutual_information(fixed, self.warped, mask),
            **jacobian_summary(self.jacobian, mask),
        }
        if (fixed_labels is None) != (moving_labels is None):
            raise XaimedError("Dice needs both label maps: give fixed_labels and moving_labels.")
        if fixed_labels is not None:
            fixed_labels = np.asarray(fixed_labels)
            out["dice_before"] = dice_per_label(fixed_labels, self.before(moving_labels, "label"))
            out["dice_after"] = dice_per_label(fixed_labels, self.apply(moving_labels, "label"))
        if (fixed_points is None) != (moving_points is None):
            raise XaimedError("TRE needs corresponding landmarks on both images: give "
                              "fixed_points and moving_points.")
        if fixed_points is not None:
            fixed_points = np.atleast_2d(np.asarray(fixed_points, np.float64))
            at = sample_field(self.displacement, fixed_points, self.fixed_spacing,
                              self.fixed_origin)
            for when, disp in (("before", None), ("after", at)):
                for key, value in target_registration_error(fixed_points, moving_points,
                                                            disp).items():
                    out[key.replace("tre_", f"tre_{when}_")] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Parameters, geometry, timings and quality figures (no arrays)."""
        return {"transform": self.transform, "params": self.params,
                "fixed_spacing": self.fixed_spacing, "fixed_origin": self.fixed_origin,
                "moving_spacing": self.moving_spacing, "moving_origin": self.moving_origin,
                "seconds": self.seconds, "timings": self.timings, "metrics": self.metrics,
                "transform_files": self.transform_files}


def _threads(seed: int | None, threads: int | None) -> int:
    threads = (1 if seed is not None else (os.cpu_count() or 1)) if threads is None else threads
    if int(threads) < 1:
        raise XaimedError(f"threads must be at least 1, got {threads}.")
    return int(threads)


def prewarm(seed: int | None = 0, threads: int | None = None) -> None:
    """Start the process the next :func:`register` with this ``seed``/``threads`` will use, so
    its ~2-3 s import of ANTs happens now (the registration widget calls this when it opens
    and after each run). Without it, each registration starts its own process."""
    _prewarm("ants", {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": _threads(seed, threads)})


def _check_image(array: Any, name: str) -> np.ndarray:
    arr = as_volume(array, name)
    if min(arr.shape) < 4:
        raise XaimedError(f"{name} {arr.shape} is too small to register: at least 4 voxels "
                          "per axis.")
    if float(arr.max()) == float(arr.min()):
        raise XaimedError(f"{name} is constant: there is nothing to align.")
    return arr


def _check_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.shape != shape:
        raise XaimedError(f"{name} {arr.shape} must have its image's shape {shape}.")
    if not arr.any():
        raise XaimedError(f"{name} is empty: leave it out or draw the region to use.")
    return arr != 0  # boolean: a quarter of a float32 copy (the ANTs process converts it)


def _save_float32(path: Path, array: np.ndarray) -> None:
    """``np.save(path, array.astype(np.float32))`` a z-slab at a time: an int16 CT volume
    never has a whole float32 copy in this process."""
    array = np.asarray(array)
    if array.dtype == np.float32:
        np.save(path, array)
        return
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                  "fortran_order": False, "shape": array.shape})
        for start, stop in z_slabs(array.shape[0], slab_size(array.shape, 1, budget=4_000_000)):
            out.write(np.ascontiguousarray(array[start:stop], np.float32).tobytes())


def _check_overlap(fixed_shape, fixed_spacing, fixed_origin, moving_shape, moving_spacing,
                   moving_origin) -> None:
    f_lo, m_lo = np.asarray(fixed_origin), np.asarray(moving_origin)
    f_hi = f_lo + (np.asarray(fixed_shape) - 1) * np.asarray(fixed_spacing)
    m_hi = m_lo + (np.asarray(moving_shape) - 1) * np.asarray(moving_spacing)
    if np.any(f_hi < m_lo) or np.any(m_hi < f_lo):
        raise XaimedError(
            "the fixed and moving images do not overlap in world coordinates (mm): check their "
            "spacing and origin (napari scale and translate), or move one onto the other first."
        )


def register_steps(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    fixed_spacing: Any = None,
    moving_spacing: Any = None,
    fixed_origin: Any = None,
    moving_origin: Any = None,
    transform: str = "SyN",
    seed: int | None = 0,
    threads: int | None = None,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    fixed_labels: np.ndarray | None = None,
    moving_labels: np.ndarray | None = None,
    fixed_points: np.ndarray | None = None,
    moving_points: np.ndarray | None = None,
    transforms_dir: str | os.PathLike | None = None,
    **params: Any,
) -> Steps[RegistrationResult]:
    """Generator form of :func:`register` (yields progress, returns the result)."""
    started = time.perf_counter()
    fixed = _check_image(fixed, "fixed image")
    moving = _check_image(moving, "moving image")
    f_sp, m_sp = as_spacing(fixed_spacing, "fixed_spacing"), as_spacing(moving_spacing,
                                                                       "moving_spacing")
    f_or, m_or = as_origin(fixed_origin, "fixed_origin"), as_origin(moving_origin,
                                                                   "moving_origin")
    _check_overlap(fixed.shape, f_sp, f_or, moving.shape, m_sp, m_or)
    name = transform_name(transform)
    arguments = ants_arguments(name, params)
    seed_value = ants_seed(seed)
    threads = _threads(seed, threads)
    masks = {"fixed_mask": _check_mask(fixed_mask, fixed.shape, "fixed_mask"),
             "moving_mask": _check_mask(moving_mask, moving.shape, "moving_mask")}
    if fixed_labels is not None and np.shape(fixed_labels) != fixed.shape:
        raise XaimedError(f"fixed_labels {np.shape(fixed_labels)} must have the fixed image's "
                          f"shape {fixed.shape}.")
    if moving_labels is not None and np.shape(moving_labels) != moving.shape:
        raise XaimedError(f"moving_labels {np.shape(moving_labels)} must have the moving "
                          f"image's shape {moving.shape}.")
    job = {
        "environment": {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": int(threads)},
        "transform": name, "ants_arguments": arguments, "ants_seed": seed_value,
        "fixed_spacing": f_sp, "fixed_origin": f_or, "moving_spacing": m_sp,
        "moving_origin": m_or,
    }
    yield Progress(0, ants_job.TOTAL, "starting ANTs")
    launched = time.time()
    with tempfile.TemporaryDirectory(prefix="xaimed-ants-") as tmp:
        folder = Path(tmp)
        _save_float32(folder / "fixed.npy", fixed)
        _save_float32(folder / "moving.npy", moving)
        for key, mask in masks.items():
            if mask is not None:
                np.save(folder / f"{key}.npy", mask)
        stages = STAGES[name]
        summary = yield from run_spawned(
            "napari_xaimed.registration.ants_job:run", job, folder, preload="ants",
            progress=lambda text: ants_job.log_progress(text, stages),
            what=f"ANTs {name} registration")
        warped = np.load(folder / "warped.npy")
        displacement = np.load(folder / "displacement.npy")
        saved = []
        if transforms_dir is not None:
            target = Path(transforms_dir)
            target.mkdir(parents=True, exist_ok=True)
            for fname in summary["fwdtransforms"] + summary["invtransforms"]:
                if (folder / fname).exists() and not (target / fname).exists():
                    shutil.copy2(folder / fname, target / fname)
                    saved.append(str(target / fname))
    returned = time.perf_counter()
    yield Progress(ants_job.TOTAL - 1, ants_job.TOTAL, "Jacobian and quality figures")
    result = RegistrationResult(
        warped=warped, displacement=displacement,
        jacobian=jacobian_determinant(displacement, f_sp), transform=name,
        fixed_spacing=f_sp, fixed_origin=f_or, moving_spacing=m_sp, moving_origin=m_or,
        moving_shape=tuple(moving.shape),
        params={"transform": name, "seed": seed, "threads": int(threads), **params,
                "deformable": name in DEFORMABLE or name == QUICK_SYN},
        transform_files=saved,
    )
    result.metrics = result.quality(
        fixed, moving, fixed_labels=fixed_labels, moving_labels=moving_labels,
        fixed_points=fixed_points, moving_points=moving_points,
        mask=masks["fixed_mask"])
    result.seconds = time.perf_counter() - started
    result.timings = {
        "start_s": summary["ants_ready_at"] - launched,  # a Python with ANTs imported
        "registration_s": summary["registration_s"],  # ants.registration itself
        "compose_s": summary["compose_s"],  # one displacement field from all transforms
        "after_s": time.perf_counter() - returned,  # Jacobian and quality figures
        "total_s": result.seconds,
    }
    yield Progress(ants_job.TOTAL, ants_job.TOTAL, "done")
    return result


def register(fixed: np.ndarray, moving: np.ndarray, **kwargs: Any) -> RegistrationResult:
    """Align ``moving`` to ``fixed`` with ANTsPy and return the deformation on the fixed grid.

    ANTs runs in a spawned process (it holds the GIL, which would freeze a napari viewer), with
    its transform files in a temporary folder that is always removed.

    Parameters
    ----------
    fixed, moving : numpy.ndarray
        3D ``(z, y, x)`` images; their shapes and spacings may differ.
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
    RegistrationResult
    """
    return run_steps(register_steps(fixed, moving, **kwargs))
