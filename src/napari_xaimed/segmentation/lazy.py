"""Segmentation of volumes larger than memory, slab by slab along z, with bounded memory.

The volume may be a dask array (:func:`~napari_xaimed.io.read_volume` of a Zarr store or a lazy
NIfTI), a ``zarr.Array``, a memory map or a numpy array: only one slab of planes is in memory
at a time. The results equal those of the in-memory functions on the whole volume:

- :func:`otsu_threshold_lazy`: the histogram of scikit-image's ``threshold_otsu`` (the same
  range, bins and edges), accumulated slab by slab, then scikit-image's own threshold on it:
  the same value as :func:`~napari_xaimed.segmentation.otsu_threshold` (multi-Otsu as well).
- :func:`label_lazy`: connected components per slab (cc3d, or scipy), with the components
  that touch across a slab boundary merged (the equivalences of a union-find, solved as the
  connected components of a sparse graph of provisional labels), the minimum size in mm^3
  applied to the merged sizes, and the instances numbered in raster order of their first
  voxel: the same labels as :func:`~napari_xaimed.segmentation.split_instances`.
- :func:`segment_lazy`: Otsu or a fixed threshold, then :func:`label_lazy`: the labels of
  :func:`~napari_xaimed.segmentation.segment` with ``"otsu"`` or ``"threshold"`` (``value=``).

- :func:`segment_model_lazy`: a PyTorch/MONAI network by MONAI's sliding windows, band of
  windows by band along z: the labels of :func:`~napari_xaimed.segmentation.segment_with_model`
  (same windows, importance map and blending; no ``model_spacing`` resampling).

The labels are written to an OME-Zarr store (uint32) and returned as a dask array over it.
Smoothing, opening, hole filling, percentile thresholds and the watershed split look across
the whole volume and are not done lazily: they raise an
:class:`~napari_xaimed.XaimedError` naming the alternative.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed._core.tempstores import make_folder, remove_at_exit
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.components.lazy import (  # noqa: F401 - label_lazy: also here, as before
    _LABEL_DTYPE,
    _RANK,
    _label_slabs,
    _output,
    label_lazy,
)
from napari_xaimed.io.lazy import check_new_store, read_slab, read_zarr, set_provenance, z_slabs
from napari_xaimed.io.slab_stats import (  # noqa: F401 - value_range and histogram_lazy: also here, as before
    _check_3d,
    _histogram_steps,
    _planes,
    _value_range_steps,
    histogram_lazy,
    value_range,
)
from napari_xaimed.segmentation.model_lazy import (  # noqa: F401 - also importable from here, as before
    segment_model_lazy,
    segment_model_lazy_steps,
)
from napari_xaimed.segmentation.result import (  # noqa: F401 - also importable from here, as before
    LazySegmentation,
    SegmentationResult,
)
from napari_xaimed.segmentation.threshold import check_otsu_classes

#: Bytes of input voxels per slab by default (the temporaries are a few times this).
SLAB_BYTES = 32 * 2**20


def otsu_threshold_lazy(volume: Any, classes: int = 2, nbins: int = 256,
                        slab: int | None = None) -> float:
    """Otsu's threshold of a volume larger than memory, from a histogram read slab by slab.

    Equals :func:`~napari_xaimed.segmentation.otsu_threshold` (scikit-image's
    ``threshold_otsu``; for ``classes > 2`` the highest ``threshold_multiotsu`` threshold) on
    the whole volume: the histogram is the one scikit-image builds (:func:`histogram_lazy`)
    and scikit-image computes the threshold from it.

    Parameters
    ----------
    volume : array-like
        3D volume: numpy, memory map, zarr or dask array.
    classes : int
        2 for Otsu; more keeps the brightest multi-Otsu class.
    nbins : int
    slab : int, optional
        Planes per slab.

    Returns
    -------
    float

    Raises
    ------
    XaimedError
        If the volume is constant, holds NaN, or ``classes`` is not a whole number >= 2.

    Examples
    --------
    >>> import numpy as np
    >>> from skimage.filters import threshold_otsu
    >>> v = np.random.default_rng(0).normal(size=(20, 16, 16)).astype(np.float32)
    >>> bool(otsu_threshold_lazy(v, slab=3) == threshold_otsu(v))
    True
    """
    return run_steps(_otsu_steps(volume, classes, nbins, slab))


def _otsu_steps(volume: Any, classes: int, nbins: int, slab: int | None) -> Steps[float]:
    from skimage.filters import threshold_multiotsu, threshold_otsu

    check_otsu_classes(classes)
    counts, centers = yield from _histogram_steps(volume, nbins, slab)
    if np.count_nonzero(counts) < 2:
        raise XaimedError("The volume is constant, so no threshold separates anything: check "
                          "that the right layer is selected.")
    if classes == 2:
        return float(threshold_otsu(hist=(counts, centers)))
    # threshold_multiotsu normalises the histogram it builds itself: give it the same one
    prob = counts / np.sum(counts)
    return float(threshold_multiotsu(hist=(prob, centers), classes=int(classes))[-1])


_NOT_LAZY = {
    "smoothing_mm": "smoothing",
    "opening_mm": "opening",
    "fill_holes": "hole filling",
    "percentile": "a percentile threshold",
}


def check_lazy_method(method: str, params: dict[str, Any], split: str | None = None) -> None:
    """Refuse what :func:`segment_lazy` cannot do slab by slab: a method other than
    ``"otsu"``/``"threshold"``, the options that look across slabs (``smoothing_mm``,
    ``opening_mm``, ``fill_holes``, ``percentile``) unless off, unknown options, and the
    watershed split.

    Raises
    ------
    XaimedError
        Saying what to do instead.
    """
    if method not in ("otsu", "threshold"):
        raise XaimedError(
            f"method {method!r} is not available for volumes larger than memory: use 'otsu' "
            "or 'threshold' (value=), or segment a crop (volume[z0:z1]) in memory with "
            "segment().")
    for key, what in _NOT_LAZY.items():
        if params.get(key) not in (None, 0, 0.0, False):
            raise XaimedError(
                f"{what} ({key}=) looks across slabs and is not done lazily: leave it out, or "
                "segment a crop in memory with segment().")
    unknown = set(params) - set(_NOT_LAZY)
    if unknown:
        raise XaimedError(f"the lazy segmentation does not take {', '.join(sorted(unknown))}.")
    if split is not None:
        raise XaimedError("the watershed split (split='watershed') needs the whole mask's "
                          "distance transform: it is not available lazily; leave split out, "
                          "or split a crop in memory with split_instances().")


def segment_lazy(volume: Any, out: str | Path, method: str = "otsu",
                 spacing: tuple[float, float, float] | None = None, **kwargs: Any
                 ) -> LazySegmentation:
    """Segment a volume larger than memory into instance labels on disk, slab by slab.

    The labels of :func:`~napari_xaimed.segmentation.segment` with the same method and
    parameters (``"otsu"`` with ``classes``, or ``"threshold"`` with ``value``; then instances
    of at least ``min_size_mm3``), written to the Zarr store ``out``. Peak memory is a few
    slabs, whatever the volume's size.

    Parameters
    ----------
    volume : array-like
        3D ``(z, y, x)``: a dask array (e.g. ``read_volume("ct.zarr").data``), zarr array,
        memory map or numpy array.
    out : str or pathlib.Path
        The Zarr store for the labels.
    method : {"otsu", "threshold"}
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``.
    classes : int
        Otsu: 2, or more to keep the brightest multi-Otsu class.
    value : float
        Threshold: voxels strictly above it.
    instances : bool
        Label connected components (default); False writes the 0/1 mask.
    min_size_mm3, connectivity
        As for :func:`~napari_xaimed.segmentation.split_instances`.
    split : None
        The watershed split is not available lazily.
    min_distance_mm : float, optional
        The watershed split's parameter: accepted (as :func:`segment` takes it) and unused,
        since there is no split.
    origin : tuple of float, optional
        Kept in the store, so the labels overlay the volume.
    slab : int, optional
        Planes per slab.
    overwrite : bool
        Replace an existing store.
    **params
        ``smoothing_mm``, ``opening_mm``, ``fill_holes``, ``percentile`` are refused (they
        look across slabs) unless off.

    Returns
    -------
    LazySegmentation

    Raises
    ------
    XaimedError
        For an unknown or non-lazy method or parameter, a constant volume, or an existing
        ``out`` without ``overwrite``.
    """
    return run_steps(segment_lazy_steps(volume, out, method, spacing, **kwargs))


def segment_lazy_steps(
    volume: Any,
    out: str | Path,
    method: str = "otsu",
    spacing: tuple[float, float, float] | None = None,
    *,
    classes: int = 2,
    value: float | None = None,
    instances: bool = True,
    min_size_mm3: float = 0.0,
    connectivity: int = 26,
    split: str | None = None,
    min_distance_mm: float | None = None,
    origin: tuple[float, float, float] | None = None,
    slab: int | None = None,
    overwrite: bool = False,
    **params: Any,
) -> Steps[LazySegmentation]:
    """Generator form of :func:`segment_lazy`: a step per slab read in each pass (Otsu's
    value range and histogram, then the two labelling passes), so a widget shows progress
    and can cancel between slabs. The arguments are checked before the first step."""
    started = time.perf_counter()
    shape = _check_3d(volume)
    spacing = as_spacing(spacing)
    check_lazy_method(method, params, split)
    if int(connectivity) not in _RANK:
        raise XaimedError(f"connectivity must be 6, 18 or 26, got {connectivity}.")
    if method == "otsu":
        check_otsu_classes(classes)
    if method == "threshold" and value is None:
        raise XaimedError("method 'threshold' needs value= (voxels strictly above it).")
    check_new_store(out, overwrite)
    used = {"method": method, "classes": classes, "value": value, "instances": instances,
            "min_size_mm3": float(min_size_mm3), "connectivity": int(connectivity),
            "slab": _planes(volume, slab), "lazy": True}
    return _segment_lazy_passes(volume, out, spacing, shape, used, origin, overwrite, started)


def _segment_lazy_passes(volume: Any, out: str | Path, spacing: tuple[float, float, float],
                         shape: tuple[int, int, int], used: dict[str, Any], origin: Any,
                         overwrite: bool, started: float) -> Steps[LazySegmentation]:
    """The passes of :func:`segment_lazy_steps`, its arguments checked: Otsu's two (when
    asked for), then the labelling's two or the mask's one."""
    import dask.array as da

    from napari_xaimed import __version__

    planes = used["slab"]
    otsu = used["method"] == "otsu"
    parts = 2 if otsu else 1
    if otsu:
        threshold = yield from within(_otsu_steps(volume, used["classes"], 256, planes), 0,
                                      parts, "Otsu: ")
    else:
        threshold = float(used["value"])

    def read_mask(start: int, stop: int) -> np.ndarray:
        return read_slab(volume, start, stop) > threshold

    instances = used["instances"]
    array = _output(out, shape, _LABEL_DTYPE if instances else np.uint8, spacing, origin,
                    planes, overwrite)
    if instances:
        writing = _label_slabs(read_mask, shape, array, planes, spacing,
                               used["min_size_mm3"], used["connectivity"])
    else:
        writing = _mask_slabs(read_mask, shape[0], array, planes)
    n = yield from within(writing, parts - 1, parts)
    seconds = time.perf_counter() - started
    set_provenance(out, {"kind": "segmentation", "params": used, "threshold": threshold,
                         "instances": n, "spacing": list(spacing), "version": __version__,
                         "seconds": seconds})
    return LazySegmentation(labels=da.from_zarr(array), path=Path(out), method=used["method"],
                            threshold=float(threshold), n_instances=n, spacing=spacing,
                            params=used, seconds=seconds)


def _mask_slabs(read_mask: Callable[[int, int], np.ndarray], depth: int, out: Any,
                planes: int) -> Steps[int]:
    """Write the 0/1 mask slab by slab into ``out``; returns 0 (no instances)."""
    for start, stop in z_slabs(depth, planes):
        yield Progress(start, depth, f"mask: planes {start}-{stop - 1}")
        out[start:stop] = read_mask(start, stop).astype(np.uint8)
    return 0


#: The model's options that look at the whole volume at once: not done band by band.
_MODEL_WHOLE = {"largest_component": "keeping the largest component",
                "model_spacing": "resampling to the model's spacing",
                "smoothing_mm": "smoothing", "autocast": "mixed precision"}


def check_dask_segmentation(method: str, params: dict[str, Any]) -> None:
    """Refuse, before any work, what :func:`segment_dask_steps` cannot do slab by slab: a
    method other than ``"otsu"``, ``"threshold"`` and ``"model"``, and the options that look
    across the whole volume.

    Raises
    ------
    XaimedError
        Saying what to do instead.
    """
    if method == "model":
        for key, what in _MODEL_WHOLE.items():
            if params.get(key) not in (None, False, 0, 0.0):
                raise XaimedError(
                    f"the volume is read lazily (larger than memory): {what} ({key}=) is not "
                    "done band by band. Turn it off, or segment a crop in memory "
                    "(volume[z0:z1]).")
        return
    if method not in ("otsu", "threshold"):
        raise XaimedError(
            f"the volume is read lazily (larger than memory): only 'otsu', 'threshold' and "
            f"'model' segment it slab by slab, not {method!r}. Pick one of them, or segment a "
            "crop in memory (volume[z0:z1]).")
    check_lazy_method(method, {k: v for k, v in params.items() if k in _NOT_LAZY},
                      params.get("split"))


def segment_dask_steps(volume: Any, method: str, spacing: tuple[float, float, float] | None,
                       *, out: str | Path | None = None, origin: Any = None,
                       workdir: str | Path | None = None, **params: Any
                       ) -> Steps[SegmentationResult]:
    """:func:`~napari_xaimed.segmentation.segment_steps` for a volume larger than memory.

    ``"otsu"`` and ``"threshold"`` by :func:`segment_lazy_steps`, ``"model"`` by
    :func:`segment_model_lazy_steps` (with its foreground probability beside the labels), into
    the Zarr store ``out`` (default: ``labels.zarr`` in a temporary folder ``xaimed-labels-*``
    under ``workdir``, removed when Python exits). Returns the
    :class:`~napari_xaimed.segmentation.result.SegmentationResult` the in-memory path does,
    with dask arrays over the stores (``facts["labels_store"]`` their path).

    Raises
    ------
    XaimedError
        For a method or an option that looks across the whole volume (see
        :func:`check_lazy_method`; for the model: ``largest_component``, ``model_spacing``,
        ``smoothing_mm``, ``autocast``).
    """
    check_dask_segmentation(method, params)
    if method == "model":
        params = {k: v for k, v in params.items() if k not in _MODEL_WHOLE}
    if out is None:
        folder = make_folder("xaimed-labels-", workdir)
        remove_at_exit(folder)
        out = folder / "labels.zarr"
    out = Path(out)
    if method != "model":
        lazy = yield from segment_lazy_steps(volume, out, method, spacing, origin=origin,
                                             **params)
        return SegmentationResult(
            labels=lazy.labels, method=lazy.method, params=lazy.params,
            facts={"threshold": lazy.threshold, "n_instances": lazy.n_instances,
                   "labels_store": str(lazy.path)},
            spacing=lazy.spacing, kind="instances" if params.get("instances", True) else "mask",
            seconds=lazy.seconds)
    from napari_xaimed.models.loading import BUNDLED_SEGMENTER

    model = params.pop("model", None) or BUNDLED_SEGMENTER
    probability_out = out.with_name(out.name.removesuffix(".zarr") + "-probability.zarr")
    lazy = yield from segment_model_lazy_steps(volume, model, out, spacing=spacing,
                                               origin=origin, probability_out=probability_out,
                                               **params)
    probability = read_zarr(probability_out).data
    return SegmentationResult(
        labels=lazy.labels, method="model", params=lazy.params,
        facts={"probabilities": "foreground", "threshold": lazy.threshold,
               "labels_store": str(lazy.path), "probability_store": str(probability_out)},
        spacing=lazy.spacing, kind="classes", probabilities=probability[None],
        seconds=lazy.seconds)
