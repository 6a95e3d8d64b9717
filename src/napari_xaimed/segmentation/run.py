"""The ``segment`` entry point and its method registry.

A method is one entry in :data:`METHODS`: a step function ``(volume, spacing, **params)``
yielding :class:`~napari_xaimed._core.progress.Progress` and returning ``(labels, probabilities,
facts)``, the parameters it reads, and what its labels are. ``"mask"`` methods return a
foreground mask that the common clean-up (hole filling, opening, instances) then turns into
labels; ``"classes"`` methods return class labels as they are. Adding a method (e.g. a deep
model) is one function and one entry.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xaimed._core.arrays import is_lazy
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.models.loading import BUNDLED_SEGMENTER
from napari_xaimed.segmentation.deep import MODEL_PARAMS, model_segmentation_steps
from napari_xaimed.segmentation.instances import split_instances
from napari_xaimed.segmentation.lazy import segment_dask_steps
from napari_xaimed.segmentation.morphology import fill_holes as fill_mask_holes
from napari_xaimed.segmentation.morphology import open_mask
from napari_xaimed.segmentation.result import SegmentationResult
from napari_xaimed.segmentation.threshold import (
    multi_otsu_thresholds,
    otsu_threshold,
    smooth,
    threshold_mask,
)
from napari_xaimed.segmentation.tissue import tissue_classes_steps

MethodOutput = tuple[np.ndarray, "np.ndarray | None", dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """A segmentation method: its step function, the parameters it reads and its output."""

    run: Callable[..., Steps[MethodOutput]]
    params: tuple[str, ...]
    output: str  # "mask" or "classes"
    cheap: bool = False  # fast enough for a live slice preview


def _no_steps(func: Callable[..., MethodOutput]) -> Callable[..., Steps[MethodOutput]]:
    """A quick method as a step function (no progress of its own)."""

    def run(volume: np.ndarray, spacing: Any, **params: Any) -> Steps[MethodOutput]:
        return func(volume, spacing, **params)
        yield  # makes this a generator

    run.__wrapped__ = func  # type: ignore[attr-defined]  # its defaults, for method_defaults
    return run


def _threshold(volume: np.ndarray, spacing: Any, *, value: float | None = None,
               percentile: float | None = None) -> MethodOutput:
    mask, used = threshold_mask(volume, value=value, percentile=percentile)
    return mask, None, {"threshold": used}


def _otsu(volume: np.ndarray, spacing: Any, *, classes: int = 2) -> MethodOutput:
    used = otsu_threshold(volume, classes=classes)
    return volume > used, None, {"threshold": used}


def _multiotsu(volume: np.ndarray, spacing: Any, *, classes: int = 3) -> MethodOutput:
    thresholds = multi_otsu_thresholds(volume, classes=classes)
    labels = (np.digitize(volume, thresholds, right=True) + 1).astype(np.uint8)
    return labels, None, {"thresholds": [float(t) for t in thresholds]}


def _tissue(method: str) -> Callable[..., Steps[MethodOutput]]:
    def run(volume: np.ndarray, spacing: Any, **params: Any) -> Steps[MethodOutput]:
        return (yield from tissue_classes_steps(volume, spacing, method=method, **params))

    return run


_TISSUE_PARAMS = ("n_classes", "mask", "mrf", "iterations", "reproducible")
# The user's model: every parameter of model_segmentation_steps but the volume's spacing.
_MODEL_PARAMS = tuple(p for p in MODEL_PARAMS if p != "spacing")


def _model(volume: np.ndarray, spacing: Any, *, model: Any = BUNDLED_SEGMENTER,
           **params: Any) -> Steps[MethodOutput]:
    """The model's class labels, and its foreground probability as the one probability map."""
    result = yield from model_segmentation_steps(volume, model, spacing=spacing, **params)
    facts = {"probabilities": "foreground", "windows": result.windows,
             "device": result.device, "model": result.model, "classes": result.classes}
    if "out_of_distribution" in result.params:
        facts["out_of_distribution"] = result.params["out_of_distribution"]
    return result.labels, result.probability[np.newaxis], facts

#: name -> :class:`Method`
METHODS: dict[str, Method] = {
    "threshold": Method(_no_steps(_threshold), ("value", "percentile"), "mask", cheap=True),
    "otsu": Method(_no_steps(_otsu), ("classes",), "mask", cheap=True),
    "multiotsu": Method(_no_steps(_multiotsu), ("classes",), "classes", cheap=True),
    "kmeans": Method(_tissue("kmeans"), _TISSUE_PARAMS, "classes"),
    "atropos": Method(_tissue("atropos"), _TISSUE_PARAMS, "classes"),
    "model": Method(_model, _MODEL_PARAMS, "classes"),
}

#: Parameters every method takes (smoothing before it).
PRE = ("smoothing_mm",)
#: Parameters of the clean-up of ``"mask"`` methods, with their defaults.
POST: dict[str, Any] = {"fill_holes": False, "opening_mm": 0.0, "instances": True,
                        "min_size_mm3": 0.0, "connectivity": 26, "split": None,
                        "min_distance_mm": 5.0}


def method_params(method: str) -> tuple[str, ...]:
    """All parameter names ``method`` accepts (its own, then the common ones)."""
    spec = _method(method)
    return spec.params + PRE + (tuple(POST) if spec.output == "mask" else ())


def method_defaults(method: str) -> dict[str, Any]:
    """The defaults of ``method``'s own parameters (``mask`` aside), as its functions declare
    them. A result records them with the parameters given, so its provenance reruns it even
    if a later version changes a default."""
    spec = _method(method)
    functions = [getattr(spec.run, "__wrapped__", spec.run)]
    if method in ("kmeans", "atropos"):
        functions.append(tissue_classes_steps)
    elif method == "model":
        functions.append(model_segmentation_steps)
    defaults: dict[str, Any] = {}
    for function in functions:
        for name, parameter in inspect.signature(function).parameters.items():
            if (name in spec.params and name not in ("mask", "trust") and name not in defaults
                    and parameter.default is not inspect.Parameter.empty):
                defaults[name] = parameter.default
    return defaults


def _method(method: str) -> Method:
    if method not in METHODS:
        raise XaimedError(
            f"Unknown segmentation method {method!r}: available are {', '.join(sorted(METHODS))}."
        )
    return METHODS[method]


def clean_mask(mask: np.ndarray, spacing: tuple[float, float, float], *,
               fill_holes: bool = False, opening_mm: float = 0.0) -> np.ndarray:
    """Opening (radius in mm), then hole filling: the clean-up of a foreground mask."""
    if opening_mm < 0:
        raise XaimedError(f"opening_mm must be 0 (off) or a radius in mm, got {opening_mm}.")
    mask = mask != 0
    if opening_mm > 0:
        mask = open_mask(mask, float(opening_mm), spacing)
    if fill_holes:
        mask = fill_mask_holes(mask)
    return mask


def segment_steps(
    volume: np.ndarray,
    method: str = "otsu",
    spacing: tuple[float, float, float] | None = None,
    **params: Any,
) -> Steps[SegmentationResult]:
    """Generator form of :func:`segment` (yields progress); returns a
    :class:`~napari_xaimed.segmentation.result.SegmentationResult` with the labels, the class
    probabilities (kmeans, atropos) and the facts found. A dask ``volume`` (larger than
    memory) is segmented slab by slab by
    :func:`~napari_xaimed.segmentation.lazy.segment_dask_steps` (``out=``, ``origin=``,
    ``workdir=`` apply to it)."""
    if is_lazy(volume):
        return (yield from segment_dask_steps(volume, method, spacing, **params))
    started = time.perf_counter()
    spec = _method(method)
    accepted = method_params(method)
    unknown = set(params) - set(accepted)
    if unknown:
        raise XaimedError(
            f"Method {method!r} does not take {', '.join(sorted(unknown))}; it takes "
            f"{', '.join(accepted)}."
        )
    volume = as_volume(volume, "volume")
    spacing = as_spacing(spacing)
    own = {k: v for k, v in params.items() if k in spec.params}
    post = {k: params.get(k, v) for k, v in POST.items()} if spec.output == "mask" else {}
    yield Progress(0, 4, "smoothing")
    smoothed = smooth(volume, float(params.get("smoothing_mm", 0.0)), spacing)
    yield Progress(1, 4, f"running {method}")
    labels, probabilities, facts = yield from spec.run(smoothed, spacing, **own)
    kind = "classes"
    if spec.output == "mask":
        yield Progress(2, 4, "cleaning the mask")
        mask = clean_mask(labels, spacing, fill_holes=bool(post["fill_holes"]),
                          opening_mm=float(post["opening_mm"]))
        yield Progress(3, 4, "labelling instances")
        if post["instances"]:
            labels = split_instances(
                mask, spacing=spacing, min_size_mm3=float(post["min_size_mm3"]),
                connectivity=int(post["connectivity"]), split=post["split"],
                min_distance_mm=float(post["min_distance_mm"]))
            facts["instances"] = int(labels.max())
            kind = "instances"
        else:
            labels, kind = mask.astype(np.uint8), "mask"
    yield Progress(4, 4, "done")
    # trust is the caller's leave to run a model file's code, not a setting of the result:
    # a rerun must be given it again
    used = {**method_defaults(method), "smoothing_mm": 0.0,
            **{k: v for k, v in params.items() if k not in ("mask", "trust")}, **post}
    if "mask" in params:
        used["mask"] = None if params["mask"] is None else "given"
    if "mrf" in facts and used.get("mrf") is None:  # the weight used, not None for "default"
        used["mrf"] = facts["mrf"]
    return SegmentationResult(labels=labels, method=method, params=used, facts=facts,
                              spacing=spacing, kind=kind, probabilities=probabilities,
                              seconds=time.perf_counter() - started)


def segment(
    volume: np.ndarray,
    method: str = "otsu",
    spacing: tuple[float, float, float] | None = None,
    **params: Any,
) -> np.ndarray:
    """Segment a 3D volume into labels.

    Parameters
    ----------
    volume : numpy.ndarray or dask.array.Array
        3D image, ``(z, y, x)``. A dask array (a Zarr store or a NIfTI larger than memory) is
        segmented slab by slab into a Zarr store (``out=``, default a temporary folder under
        ``workdir=``; ``origin=`` its world origin) and the labels come back as a dask array
        over it: ``"otsu"`` and ``"threshold"`` (the same labels as in memory), and
        ``"model"`` window band by window band; the options that look across the whole
        volume (smoothing, opening, hole filling, percentile, the watershed split; the
        model's ``largest_component``, ``model_spacing``, ``autocast``) raise an
        :class:`~napari_xaimed.XaimedError`.
    method : str
        One of :data:`METHODS`:

        - ``"threshold"`` (``value=`` or ``percentile=``): voxels above it;
        - ``"otsu"`` (``classes=``, default 2; more keeps the brightest multi-Otsu class);
        - ``"multiotsu"`` (``classes=``, default 3): class labels ``1..classes`` between the
          multi-Otsu thresholds, 1 the darkest;
        - ``"kmeans"``, ``"atropos"`` (``n_classes=3``, ``mask=None``, ``mrf=``,
          ``iterations=5``, ``reproducible=True``): ANTs tissue classes ``1..n_classes``
          ordered by mean intensity (1 the darkest), 0 outside the mask (default:
          ``ants.get_mask`` above 1% of the intensity range); run in a separate process.
          :func:`segment_steps` also returns their probability maps;
        - ``"model"`` (``model=`` a file, a module or ``"bundled-segmenter"``, the default;
          ``roi_size``, ``overlap``, ``blend``, ``sw_batch_size``, ``device``, ``autocast``,
          ``output``, ``threshold``, ``channel``, ``largest_component``, ``preprocessing``,
          ``model_spacing``, ``trust``): the model's class labels by MONAI sliding-window inference
          (:func:`~napari_xaimed.segmentation.deep.model_segmentation_steps`);
          :func:`segment_steps` also returns its foreground probability.
    spacing : tuple of float, optional
        Voxel size in mm (``(z, y, x)``): every size below is in mm.
    **params
        The method's parameters, ``smoothing_mm`` (Gaussian sigma, default 0) for all, and for
        the mask methods (threshold, otsu) the clean-up: ``opening_mm`` (radius of a ball in
        mm, default 0 = off), ``fill_holes`` (default False), ``instances`` (label connected
        components, default True; False gives a 0/1 mask), ``min_size_mm3`` (default 0),
        ``connectivity`` (6/18/26, default 26), ``split`` (None or ``"watershed"`` to split
        touching objects) and ``min_distance_mm`` (the watershed's, default 5).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Labels with the volume's shape (a dask array for a dask volume).

    Examples
    --------
    >>> from napari_xaimed.samples import lesion_volume
    >>> s = lesion_volume(seed=0)
    >>> labels = segment(s.image, "otsu", spacing=s.spacing, classes=3, min_size_mm3=20)
    """
    return run_steps(segment_steps(volume, method, spacing, **params)).labels
