"""Registration of volumes held in memory with ANTsPy, in a spawned process: the inputs checked,
ANTs' transforms composed into one displacement on the fixed grid, the warped image, the
Jacobian and the quality figures. The public entry point is
:func:`~napari_xaimed.registration.register_steps`, which sends dask volumes to
:mod:`~napari_xaimed.registration.lazy` instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.ants_import import ANTS_PRELOAD
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed._core.spawned import prewarm as _prewarm
from napari_xaimed._core.spawned import run_spawned
from napari_xaimed._core.validate import as_origin, as_spacing, as_volume
from napari_xaimed.io.lazy import slab_size, z_slabs
from napari_xaimed.registration import ants_job
from napari_xaimed.registration.fields import jacobian_determinant
from napari_xaimed.registration.params import (
    DEFORMABLE,
    QUICK_SYN,
    STAGES,
    ants_arguments,
    ants_seed,
    transform_name,
)
from napari_xaimed.registration.result import RegistrationResult, before_figures, check_pairs


def _threads(seed: int | None, threads: int | None) -> int:
    threads = (1 if seed is not None else (os.cpu_count() or 1)) if threads is None else threads
    if int(threads) < 1:
        raise XaimedError(f"threads must be at least 1, got {threads}.")
    return int(threads)


def prewarm(seed: int | None = 0, threads: int | None = None) -> None:
    """Start the process the next :func:`~napari_xaimed.registration.register` with this
    ``seed``/``threads`` will use, so its ~2-3 s import of ANTs happens now (the registration
    widget calls this when it opens and after each run). Without it, each registration starts
    its own process."""
    _prewarm(ANTS_PRELOAD, {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": _threads(seed, threads)})


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


def register_in_memory_steps(
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
    """The in-memory path of :func:`~napari_xaimed.registration.register_steps` (yields
    progress, returns the result)."""
    started = time.perf_counter()
    threads = _threads(seed, threads)
    environment = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": int(threads)}
    # A first call starts the ANTs process now: its import overlaps the checks and the saving
    # of the inputs below (a warm one, from prewarm, is simply kept).
    _prewarm(ANTS_PRELOAD, environment)
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
    masks = {"fixed_mask": _check_mask(fixed_mask, fixed.shape, "fixed_mask"),
             "moving_mask": _check_mask(moving_mask, moving.shape, "moving_mask")}
    if fixed_labels is not None and np.shape(fixed_labels) != fixed.shape:
        raise XaimedError(f"fixed_labels {np.shape(fixed_labels)} must have the fixed image's "
                          f"shape {fixed.shape}.")
    if moving_labels is not None and np.shape(moving_labels) != moving.shape:
        raise XaimedError(f"moving_labels {np.shape(moving_labels)} must have the moving "
                          f"image's shape {moving.shape}.")
    check_pairs(fixed_labels, moving_labels, fixed_points, moving_points)
    job = {
        "environment": environment,
        "transform": name, "ants_arguments": arguments, "ants_seed": seed_value,
        "fixed_spacing": f_sp, "fixed_origin": f_or, "moving_spacing": m_sp,
        "moving_origin": m_or,
    }
    yield Progress(0, ants_job.TOTAL, "starting ANTs")
    launched = time.time()
    # The "before" figures need no result: a thread computes them while ANTs runs in its own
    # process (numpy and scipy release the GIL; this thread only polls ANTs' log).
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xaimed-before")
    before = pool.submit(before_figures, fixed, moving, f_sp, f_or, m_sp, m_or,
                         fixed_labels=fixed_labels, moving_labels=moving_labels,
                         fixed_points=fixed_points, moving_points=moving_points,
                         mask=masks["fixed_mask"])
    pool.shutdown(wait=False)
    with tempfile.TemporaryDirectory(prefix="xaimed-ants-") as tmp:
        folder = Path(tmp)
        _save_float32(folder / "fixed.npy", fixed)
        _save_float32(folder / "moving.npy", moving)
        for key, mask in masks.items():
            if mask is not None:
                np.save(folder / f"{key}.npy", mask)
        stages = STAGES[name]
        summary = yield from run_spawned(
            "napari_xaimed.registration.ants_job:run", job, folder, preload=ANTS_PRELOAD,
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
        mask=masks["fixed_mask"], before=before.result())
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
