"""Explain a model's decision on a volume: checks, target, method, map back to the volume."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_xaimed._core.arrays import is_lazy
from napari_xaimed._core.progress import Steps, run_steps
from napari_xaimed.attribution.in_memory import attribute_in_memory_steps
from napari_xaimed.attribution.lazy import attribute_lazy_steps
from napari_xaimed.attribution.map_checks import (  # noqa: F401 - also importable from here, as before
    _check_map,
)
from napari_xaimed.attribution.probe import (  # noqa: F401 - also importable from here, as before
    AUTOCAST,
    RegionScore,
    _Autocast,
    _hook_ready,
    _primed_probe,
    _probe,
    _region_on,
)
from napari_xaimed.attribution.result import Attribution
from napari_xaimed.models.preprocess import Preprocessing


def attribute_steps(
    model: Any,
    volume: np.ndarray,
    method: str = "integrated_gradients",
    *,
    target: int | None = None,
    region: np.ndarray | None = None,
    device: str | torch.device = "auto",
    preprocessing: dict[str, Any] | Preprocessing | None = None,
    batch_size: int | None = None,
    autocast: str | None = None,
    seed: int = 0,
    spacing: Any = None,
    **params: Any,
) -> Steps[Attribution]:
    """Generator form of :func:`attribute` (yields progress, returns the attribution).

    A numpy volume is explained in memory
    (:func:`~napari_xaimed.attribution.in_memory.attribute_in_memory_steps`); a dask volume (a
    Zarr store or a NIfTI larger than memory) slab by slab or window band by window band
    (:func:`~napari_xaimed.attribution.lazy.attribute_lazy_steps`, which also takes ``out``,
    ``slab``, ``roi_size``, ``overlap``, ``blend``, ``sw_batch_size`` and ``workdir``).
    """
    if is_lazy(volume):
        # autocast only when asked: the sliding-window path takes none
        extra = {} if autocast is None else {"autocast": autocast}
        return (yield from attribute_lazy_steps(
            model, volume, method, target=target, region=region, device=device,
            preprocessing=preprocessing, batch_size=batch_size, seed=seed, spacing=spacing,
            **extra, **params))
    return (yield from attribute_in_memory_steps(
        model, volume, method, target=target, region=region, device=device,
        preprocessing=preprocessing, batch_size=batch_size, autocast=autocast, seed=seed,
        spacing=spacing, **params))


def attribute(model: Any, volume: Any, method: str = "integrated_gradients",
              **kwargs: Any) -> Attribution:
    """Explain ``model``'s decision on ``volume`` with ``method``.

    Parameters
    ----------
    model : torch.nn.Module, path, LoadedModel or "bundled"
        See :func:`~napari_xaimed.attribution.load_model`.
    volume : numpy.ndarray or dask.array.Array
        3D ``(z, y, x)``. A dask array (a Zarr store or a NIfTI larger than memory) is
        explained by :func:`~napari_xaimed.attribution.attribute_lazy` (same map, read slab by
        slab; segmentation networks window band by window band), which also takes ``out``,
        ``slab``, ``roi_size``, ``overlap``, ``blend``, ``sw_batch_size`` and ``workdir``.
    method : str
        One of :data:`~napari_xaimed.attribution.METHODS`.
    target : int, optional
        Classifier: the class to explain (default: the predicted one). Segmentation model: the
        output channel (default 1, or 0 with a single channel), explained as its summed logit
        inside ``region`` (default: where the model predicts that channel).
    region : numpy.ndarray, optional
        Mask on the volume's grid for a segmentation target.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    preprocessing : dict, optional
        Overrides of the model's ``scaling``, ``window``, ``input_size``.
    batch_size : int, optional
        Volumes per forward pass for the batched methods (default: from free memory);
        out-of-memory halves it and retries.
    autocast : {None, "bf16", "fp16"}
        Mixed precision for the forward passes: faster on GPUs, but the rounding blurs small
        score differences (an occlusion window much smaller than the evidence).
    seed : int
        Seeds the noise of SmoothGrad, VarGrad and GradientSHAP.
    spacing : tuple of float, optional
        The volume's voxel size in mm, for occlusion windows given with ``unit="mm"``.
    **params
        The method's parameters (``METHODS[method].params``): ``steps``, ``baseline``,
        ``samples``, ``noise``, ``layer``, ``window``, ``stride``, ``unit`` (``"voxels"`` or
        ``"mm"``), ``incremental``, ``supervoxels``.

    Returns
    -------
    Attribution
    """
    return run_steps(attribute_steps(model, volume, method, **kwargs))
