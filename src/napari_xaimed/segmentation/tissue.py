"""ANTs tissue classes (k-means and Atropos), run in a spawned process.

ANTs holds the GIL for the whole classification, so, as for registration, it runs in a fresh
Python process (:func:`napari_xaimed._core.spawned.run_spawned`); the arrays travel as
``.npy`` files in a temporary folder, progress comes from Atropos' log, and closing the step
generator (a cancel) kills the process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.ants_import import ANTS_PRELOAD
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed._core.spawned import prewarm as _prewarm
from napari_xaimed._core.spawned import run_spawned
from napari_xaimed.segmentation import ants_classes

TISSUE_METHODS = ("kmeans", "atropos")
#: MRF smoothing weights ANTsPy uses by default: kmeans_segmentation 0.1, atropos 0.2.
DEFAULT_MRF = {"kmeans": 0.1, "atropos": 0.2}


def _environment(reproducible: bool) -> dict[str, Any]:
    return {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": 1} if reproducible else {}


def prewarm(reproducible: bool = True) -> None:
    """Start the process the next kmeans/atropos run will use, so its ~2-3 s import of ANTs
    happens now (the segmentation widget calls this when an ANTs method is picked)."""
    _prewarm(ANTS_PRELOAD, _environment(reproducible))


def check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """None, or a 0/1 float32 mask of the volume's shape with something in it."""
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.shape != shape:
        raise XaimedError(f"mask {arr.shape} must have the volume's shape {shape}: pick the "
                          "mask drawn on this volume, or resample it first.")
    if not arr.any():
        raise XaimedError("mask is empty: leave it out (ANTs then finds the tissue itself) or "
                          "draw the region to classify.")
    return (arr != 0).astype(np.float32)


def tissue_classes_steps(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    method: str = "atropos",
    n_classes: int = 3,
    mask: np.ndarray | None = None,
    mrf: float | None = None,
    iterations: int = 5,
    reproducible: bool = True,
) -> Steps[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Classify a volume into tissue classes with ANTs; yields progress.

    Parameters
    ----------
    volume : numpy.ndarray
        Validated 3D volume.
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``, handed to ANTs (its MRF weighs neighbours in mm).
    method : {"kmeans", "atropos"}
        ``"kmeans"``: ``ants.kmeans_segmentation``'s recipe (intensities normalised to 0-1,
        mask holes filled); ``"atropos"``: ``ants.atropos`` on the raw intensities. Both start
        from k-means and refine with a Gaussian mixture and an MRF prior.
    n_classes : int
        Number of classes, at least 2.
    mask : numpy.ndarray, optional
        Where to classify; default: ``ants.get_mask`` above 1% of the intensity range.
    mrf : float, optional
        MRF smoothing weight (higher is smoother); default 0.1 (kmeans), 0.2 (atropos).
    iterations : int
        EM iterations (all run: convergence threshold 0).
    reproducible : bool
        Atropos' constant internal seed and one ITK thread, so runs are bit-identical (Atropos
        takes no seed value: only "fixed" or "from the clock").

    Returns
    -------
    labels : numpy.ndarray
        uint8, 0 outside the mask, classes ``1..n_classes`` ordered by mean intensity (1 the
        darkest).
    probabilities : numpy.ndarray
        float32 ``(n_classes, z, y, x)``, the posterior of class ``k + 1`` at index ``k``.
    facts : dict
        Class mean intensities, voxel counts and the mask size.
    """
    if method not in TISSUE_METHODS:
        raise XaimedError(f"method must be one of {TISSUE_METHODS}, got {method!r}.")
    if int(n_classes) != n_classes or n_classes < 2:
        raise XaimedError(f"n_classes must be a whole number of at least 2, got {n_classes}.")
    if int(iterations) != iterations or iterations < 1:
        raise XaimedError(f"iterations must be a whole number of at least 1, got {iterations}.")
    mrf = DEFAULT_MRF[method] if mrf is None else float(mrf)
    if not 0 <= mrf <= 10:
        raise XaimedError(f"mrf (the MRF smoothing weight) must be within 0-10, got {mrf}.")
    checked = check_mask(mask, volume.shape)
    if float(volume.max()) == float(volume.min()):
        raise XaimedError("The volume is constant: there are no tissue classes to find.")
    job = {
        "environment": _environment(reproducible),
        "method": method, "n_classes": int(n_classes), "mrf": mrf,
        "iterations": int(iterations), "reproducible": bool(reproducible),
        "spacing": list(spacing),
    }
    yield Progress(0, ants_classes.TOTAL, "starting ANTs")
    with tempfile.TemporaryDirectory(prefix="xaimed-atropos-") as tmp:
        folder = Path(tmp)
        np.save(folder / "volume.npy", volume.astype(np.float32, copy=False))
        if checked is not None:
            np.save(folder / "mask.npy", checked)
        summary = yield from run_spawned(
            "napari_xaimed.segmentation.ants_classes:run", job, folder, preload=ANTS_PRELOAD,
            progress=ants_classes.log_progress, what=f"ANTs {method}")
        labels = np.load(folder / "labels.npy")
        probabilities = np.load(folder / "probabilities.npy")
    labels, probabilities, means = order_by_intensity(volume, labels, probabilities)
    counts = np.bincount(labels.ravel(), minlength=n_classes + 1)[1:]
    facts = {"class_means": means, "class_voxels": [int(c) for c in counts],
             "mask_voxels": summary["mask_voxels"], "ants_spacing": summary["ants_spacing"],
             "mrf": mrf,
             "class_order": "by mean intensity, 1 = darkest"}
    return labels, probabilities, facts


def order_by_intensity(volume: np.ndarray, labels: np.ndarray, probabilities: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Renumber classes ``1..n`` by their mean intensity (Atropos already orders them so without
    priors; this makes the promise independent of that)."""
    n = probabilities.shape[0]
    sums = np.bincount(labels.ravel(), weights=volume.ravel().astype(np.float64), minlength=n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    means = np.where(counts[1:] > 0, sums[1:] / np.maximum(counts[1:], 1), np.inf)
    order = np.argsort(means, kind="stable")  # new class k + 1 is old class order[k] + 1
    relabel = np.zeros(n + 1, np.uint8)
    relabel[order + 1] = np.arange(1, n + 1, dtype=np.uint8)
    return relabel[labels], probabilities[order], [float(m) for m in means[order]]
