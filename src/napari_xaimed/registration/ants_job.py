"""The ANTs side of a registration: what runs in the spawned process, and reading its log.

:func:`run` is the child's entry point; it imports ANTs (after the parent set
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``), registers, composes all transforms into one
displacement field on the fixed grid and saves the arrays into the job folder. ANTs writes its
transform files under the same folder (``outprefix``), which the parent removes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.progress import Progress

TOTAL = 1000  # progress is reported in thousandths


def run(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Register ``folder/fixed.npy`` to ``folder/moving.npy`` as ``job`` says (child side)."""
    import ants

    ready = time.time()  # wall clock: the parent compares it with its own start time

    def image(name: str, spacing, origin):
        path = folder / f"{name}.npy"
        if not path.exists():
            return None
        # masks come as booleans; the images as float32 already (no copy)
        return ants.from_numpy(np.load(path).astype(np.float32, copy=False),
                               spacing=tuple(spacing),
                               origin=tuple(origin))

    fixed = image("fixed", job["fixed_spacing"], job["fixed_origin"])
    moving = image("moving", job["moving_spacing"], job["moving_origin"])
    fixed_mask = image("fixed_mask", job["fixed_spacing"], job["fixed_origin"])
    moving_mask = image("moving_mask", job["moving_spacing"], job["moving_origin"])
    ants.config._random_seed = job["ants_seed"]
    started = time.perf_counter()
    # JSON turned the tuples into lists, and antspyx tests `type(...) is tuple` for the
    # per-level affine settings (a list silently falls back to its fixed 4-level schedule)
    arguments = {k: tuple(v) if isinstance(v, list) else v
                 for k, v in job["ants_arguments"].items()}
    reg = ants.registration(
        fixed, moving, job["transform"], outprefix=str(folder / "ants_"), mask=fixed_mask,
        moving_mask=moving_mask, verbose=True, **arguments)
    registration_s = time.perf_counter() - started
    started = time.perf_counter()
    # .numpy() is already a copy of ANTs' float32 image: no second one
    np.save(folder / "warped.npy", reg["warpedmovout"].numpy().astype(np.float32, copy=False))
    reg.pop("warpedmovout")
    reg.pop("warpedfixout", None)  # unused: free its volume before composing the field
    field = compose(reg["fwdtransforms"], fixed)
    if field is None:  # a list we do not compose ourselves: ANTs does it (slower, via .nii.gz)
        composed = ants.apply_transforms(fixed, moving, reg["fwdtransforms"],
                                         compose=str(folder / "composed_"))
        field = ants.image_read(composed).numpy()
    np.save(folder / "displacement.npy", field.astype(np.float32, copy=False))
    print("XAIMED composed the transforms", flush=True)
    return {"registration_s": registration_s, "ants_ready_at": ready,
            "compose_s": time.perf_counter() - started,
            "fwdtransforms": [Path(p).name for p in reg["fwdtransforms"]],
            "invtransforms": [Path(p).name for p in reg["invtransforms"]]}


def compose(transforms: list[str], fixed: Any) -> np.ndarray | None:
    """The displacement (mm, pull-back) of ANTs' forward transform list on the fixed grid, or
    None when the list holds something other than a leading warp field and affine matrices.

    ANTs maps a fixed point through the list in order: ``[Warp, Affine]`` gives
    ``q = A(p + w(p))``, with ``A(x) = M (x - c) + c + t`` (ITK's matrix-offset form). The warp
    comes first, so it is read on its own grid points and nothing needs interpolating; this
    equals ``ants.apply_transforms(..., compose=...)`` (tested) without writing and reading
    back a compressed field, which takes seconds at 128^3.
    """
    import ants

    if not np.allclose(np.asarray(fixed.direction), np.eye(3)):
        return None
    axes = [np.float64(origin) + np.float64(spacing) * np.arange(n) for origin, spacing, n in
            zip(fixed.origin, fixed.spacing, fixed.shape, strict=True)]
    # Track the map as u(p) = L p + v(p) + b: L and b collect the affine parts, v the warp
    # (only a leading warp, so it is never interpolated). Grid points stay implicit (1D axes).
    linear, offset = np.eye(3), np.zeros(3)
    warp: np.ndarray | None = None
    for index, path in enumerate(transforms):
        if path.endswith(".mat"):
            transform = ants.read_transform(path)
            if transform.transform_type != "AffineTransform":
                return None
            parameters = np.asarray(transform.parameters, dtype=np.float64)
            centre = np.asarray(transform.fixed_parameters, dtype=np.float64)
            matrix, shift = parameters[:9].reshape(3, 3), parameters[9:]
            # x -> M (x - c) + c + t, applied to x = L p + v + b
            linear, offset = matrix @ linear, matrix @ (offset - centre) + centre + shift
            if warp is not None:
                warp = np.einsum("ij,...j->...i", matrix.astype(np.float32), warp)
        elif index == 0 and path.endswith("Warp.nii.gz"):
            image = ants.image_read(path)
            if image.shape != fixed.shape:
                return None
            warp = image.numpy().astype(np.float32)
        else:
            return None
    field = np.zeros((*fixed.shape, 3), np.float32) if warp is None else warp
    change = linear - np.eye(3)
    shape = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
    for i in range(3):
        component = field[..., i]
        component += np.float32(offset[i])
        for a in range(3):
            if change[i, a] != 0:
                component += (change[i, a] * axes[a]).astype(np.float32).reshape(shape[a])
    return field


_STAGE = re.compile(r"^Stage (\d+)\s*$", re.M)
_LEVELS = re.compile(r"number of levels = (\d+)")
_HEADER = "DIAGNOSTIC,Iteration"
_ITERATION = re.compile(r"DIAGNOSTIC,\s*(\d+),")


def log_progress(text: str, stages: int) -> Progress:
    """Where ANTs is, from its verbose log: stage, resolution level and iteration.

    ANTs lists the number of levels of every stage first, then prints ``Stage k`` when a stage
    starts, a ``DIAGNOSTIC,Iteration,...`` header when a level starts and one ``DIAGNOSTIC``
    line per iteration. Progress counts finished levels (iterations per level are not known in
    advance: convergence may end a level early).
    """
    if "XAIMED composed" in text:
        return Progress(TOTAL, TOTAL, "composing done")
    first_stage = _STAGE.search(text)
    levels = [int(n) for n in _LEVELS.findall(text[:first_stage.start()] if first_stage else
                                              text)]
    stage_marks = list(_STAGE.finditer(text))
    if not stage_marks:
        return Progress(0, TOTAL, "ANTs is starting")
    stage_index = len(stage_marks) - 1
    current = text[stage_marks[-1].end():]
    level = current.count(_HEADER)
    iterations = _ITERATION.findall(current[current.rfind(_HEADER):]) if level else []
    n_levels = levels[stage_index] if stage_index < len(levels) else max(level, 1)
    n_stages = max(stages, stage_index + 1)
    fraction = (stage_index + max(level - 1, 0) / max(n_levels, 1)) / n_stages
    message = f"stage {stage_index + 1} of {n_stages}"
    if level:
        message += f", level {level} of {n_levels}"
    if iterations:
        message += f", iteration {iterations[-1]}"
    return Progress(min(int(fraction * TOTAL), TOTAL - 1), TOTAL, message)
