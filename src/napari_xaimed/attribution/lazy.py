"""Attribution on volumes larger than memory, for models that resize their input.

A model whose preprocessing resizes the volume (``input_size``, e.g. the bundled lesion
classifier's 32^3) sees only a small volume, so the whole volume never needs to be in memory:

1. the intensity scaling's statistics (z-score mean and standard deviation, min-max range) are
   accumulated slab by slab;
2. the resize is trilinear interpolation with ``align_corners=False`` (what
   :func:`torch.nn.functional.interpolate` does in memory), which is separable: each output
   plane is a weighted sum of at most two input planes, each resized in y and x. Only the
   planes with a weight are read, one slab at a time;
3. :func:`~napari_xaimed.attribution.attribute` explains the model on that small input, as it
   would in memory;
4. the map is resized back to the volume's grid lazily, as a dask array whose chunks are
   computed (by the same separable interpolation) when read, or written to a Zarr store slab
   by slab with ``out=``.

The map equals the in-memory :func:`~napari_xaimed.attribution.attribute` map up to float
rounding (the interpolation's sums run in another order).

Models that take the volume at its own size (no ``input_size``: segmentation networks such as
MONAI's UNet) are explained as the sliding-window model that
:func:`~napari_xaimed.segmentation.segment_with_model` runs, window band by window band, by
:mod:`napari_xaimed.models.windows` (saliency, input x gradient, Integrated Gradients;
a channel's summed logit in a region, by default where the model predicts it). A ``region``
applies to those models only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.attribution.in_memory import attribute_in_memory_steps
from napari_xaimed.attribution.result import Attribution
from napari_xaimed.io.lazy import chunks_of, read_slab, slab_size, write_zarr, z_slabs
from napari_xaimed.models.loading import load_model
from napari_xaimed.models.preprocess import Preprocessing, _scaling_stats

SLAB_BYTES = 32 * 2**20


def linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of 1D linear interpolation as PyTorch's ``interpolate`` does
    it with ``align_corners=False`` (no antialiasing): output ``i`` samples the input at
    ``max(0, (i + 0.5) * n_in / n_out - 0.5)`` between its two neighbours."""
    scale = n_in / n_out
    source = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    frac = source - low
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), high), frac)
    return weights


def downsample_lazy(volume: Any, size: tuple[int, int, int], prep: Preprocessing | None = None,
                    slab: int | None = None) -> np.ndarray:
    """The model's input: :func:`downsample_lazy_steps` run to its end."""
    return run_steps(downsample_lazy_steps(volume, size, prep, slab))


def downsample_lazy_steps(volume: Any, size: tuple[int, int, int],
                          prep: Preprocessing | None = None, slab: int | None = None
                          ) -> Steps[np.ndarray]:
    """The model's input: the volume scaled as ``prep`` says and resized to ``size``.

    What :func:`~napari_xaimed.models.preprocess.to_input` gives in memory (trilinear,
    ``align_corners=False``), reading only the planes the resize needs, a slab at a time.

    Parameters
    ----------
    volume : array-like
        3D ``(z, y, x)``: dask, zarr, memory map or numpy.
    size : (int, int, int)
        The model's input size ``(z, y, x)``.
    prep : Preprocessing, optional
        Intensity scaling (default none); its ``input_size`` is not read (``size`` is).
    slab : int, optional
        Planes per slab.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``size``.
    """
    prep = prep or Preprocessing()
    shape = tuple(int(n) for n in volume.shape)
    planes = int(slab) if slab else slab_size(shape, np.dtype(volume.dtype).itemsize,
                                              chunks_of(volume), SLAB_BYTES)
    yield Progress(0, shape[0], "intensity statistics")
    offset, divisor = _scaling_stats(volume, prep, planes)
    wz, wy, wx = (linear_weights(n, m) for n, m in zip(shape, size, strict=True))
    small = np.zeros(size, np.float64)
    needed = np.flatnonzero(wz.any(axis=0))
    for start, stop in z_slabs(shape[0], planes):
        inside = needed[(needed >= start) & (needed < stop)]
        if not len(inside):
            continue
        block = read_slab(volume, int(inside[0]), int(inside[-1]) + 1)
        block = block[inside - inside[0]].astype(np.float32, copy=False)
        if prep.scaling == "window":
            block = np.clip(block, *prep.window)  # type: ignore[misc]
        block = (block - np.float32(offset)) / np.float32(divisor)
        resized = np.einsum("yY,zYX,xX->zyx", wy, block.astype(np.float64), wx, optimize=True)
        small += np.tensordot(wz[:, inside], resized, axes=(1, 0))
        yield Progress(stop, shape[0], f"planes {start}-{stop - 1} of {shape[0]}")
    return small.astype(np.float32)


def upsample_lazy(small: np.ndarray, shape: tuple[int, int, int],
                  chunks: tuple[int, int, int] | None = None):
    """A small map resized to ``shape`` (trilinear, ``align_corners=False``) as a lazy dask
    array: each chunk is interpolated when it is read.

    Parameters
    ----------
    small : numpy.ndarray
        3D map.
    shape : (int, int, int)
        The volume's shape.
    chunks : (int, int, int), optional
        Chunk shape of the result (default: 32 planes, whole y and x).

    Returns
    -------
    dask.array.Array
        float32.
    """
    import dask.array as da

    small = np.asarray(small, np.float64)
    shape = tuple(int(n) for n in shape)
    chunks = chunks or (min(shape[0], 32), shape[1], shape[2])
    weights = [linear_weights(n, m) for n, m in zip(small.shape, shape, strict=True)]

    def block(block_info: dict | None = None) -> np.ndarray:
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]  # type: ignore[index]
        wz, wy, wx = weights[0][z0:z1], weights[1][y0:y1], weights[2][x0:x1]
        return np.einsum("zZ,ZYX,yY,xX->zyx", wz, small, wy, wx,
                         optimize=True).astype(np.float32)

    return da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape),
                         dtype=np.float32, meta=np.zeros((0, 0, 0), np.float32))


def attribute_lazy(model: Any, volume: Any, method: str = "integrated_gradients",
                   **kwargs: Any) -> Attribution:
    """:func:`~napari_xaimed.attribution.attribute` on a volume larger than memory.

    For models whose preprocessing resizes the volume (``input_size``): the volume is scaled
    and resized slab by slab (:func:`downsample_lazy`), explained in memory at the model's
    size, and the map resized back to the volume's grid lazily (:func:`upsample_lazy`).

    For models that take the volume at its own size (segmentation networks): the
    sliding-window model of ``sliding_window_inference(x, roi_size, sw_batch_size, model,
    overlap, mode=blend)`` is explained window band by window band
    (:func:`~napari_xaimed.attribution.windows.attribute_windows`), with bounded memory; the
    target is ``target``'s (default 1, or 0 for one channel) summed logit inside ``region``
    (default: where the sliding-window model predicts that channel, from a lazy forward pass).
    Methods: ``saliency``, ``input_x_gradient``, ``integrated_gradients`` (baseline zeros,
    min or a number).

    Parameters
    ----------
    model : torch.nn.Module, path, LoadedModel or "bundled"
    volume : array-like
        3D ``(z, y, x)``: dask (e.g. ``read_volume("ct.zarr").data``), zarr, memory map or
        numpy.
    method : str
        One of :data:`~napari_xaimed.attribution.METHODS`.
    spacing : tuple of float, optional
        The volume's voxel size in mm (for windows given in mm).
    preprocessing : dict or Preprocessing, optional
        Overrides of the model's, as for ``attribute``; ``input_size`` must remain set.
    region : array-like, optional
        Segmentation models: a mask of the volume's shape (dask, zarr, numpy; nonzero = in).
    out : str or pathlib.Path, optional
        A Zarr store to write the map to, slab by slab (the map is then read from it).
        Segmentation models always write one (default: ``map.zarr`` in a temporary folder
        ``xaimed-windows-*`` under ``workdir``, which ``.map`` reads: it is removed when Python
        exits, and its path is ``params["lazy"]["temporary"]``; pass ``out`` to keep the map,
        or delete the folder once done with ``.map`` to free the disk sooner).
    overwrite : bool
        Replace an existing ``out``.
    slab : int, optional
        Planes per slab.
    roi_size : int or (int, int, int), optional
        Segmentation models: the window (default as
        :func:`~napari_xaimed.segmentation.segment_with_model`: 96, or smaller axes rounded
        up to a multiple of 16).
    overlap : float
        Segmentation models: overlap of neighbouring windows, in [0, 1).
    blend : {"gaussian", "constant"}
        Segmentation models: MONAI's importance map (``mode``).
    sw_batch_size : int, optional
        Segmentation models: windows per pass (default 1).
    workdir : str or pathlib.Path, optional
        Segmentation models: where the temporary stores go (the map without ``out``, the
        default region); the system's temporary folder by default. The region's store is
        removed when the run ends, the map's as said under ``out``.
    **kwargs
        Everything else ``attribute`` takes (``target``, ``device``, the method's parameters;
        for segmentation models ``batch_size`` = IG points per pass).

    Returns
    -------
    Attribution
        ``.map`` a dask array of the volume's shape (float32); ``params["lazy"]`` records the
        model-grid shape, and ``params["model_map"]`` is not kept (the small map is
        ``.map``'s source); ``.seconds`` includes the slab passes. Segmentation models:
        ``params["windows"]`` records the windows (``roi_size``, ``overlap``, ``blend``,
        ``windows``, ``windows_run``, ``bands``, ``region_voxels``...), ``params["region"]``
        ``"given mask"`` or ``"model prediction"``, ``.target`` the channel and ``.scores``
        the target ``T``.

    Raises
    ------
    XaimedError
        For a region given to a classifier, a volume that is not 3D, and for segmentation
        models a method that windows cannot add up, a region of another shape or an empty
        one, an output that does not fit the window.
    """
    return run_steps(attribute_lazy_steps(model, volume, method, **kwargs))


def attribute_lazy_steps(
    model: Any,
    volume: Any,
    method: str = "integrated_gradients",
    *,
    spacing: tuple[float, float, float] | None = None,
    preprocessing: dict[str, Any] | Preprocessing | None = None,
    region: Any = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    slab: int | None = None,
    roi_size: int | tuple[int, int, int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sw_batch_size: int | None = None,
    workdir: str | Path | None = None,
    **kwargs: Any,
) -> Steps[Attribution]:
    """Generator form of :func:`attribute_lazy`: yields progress per slab read or band of
    windows explained, returns the attribution (closing it, a cancel, stops between them)."""
    import time

    import dask.array as da

    started = time.perf_counter()
    shape = tuple(int(n) for n in volume.shape)
    if len(shape) != 3:
        raise XaimedError(f"volume must be a 3D (z, y, x) volume, got shape {shape}.")
    loaded = load_model(model)
    prep = loaded.preprocessing.overridden(preprocessing)
    if prep.input_size is None:
        return (yield from _attribute_windows(
            loaded, volume, method, prep, started, spacing=spacing, region=region, out=out,
            overwrite=overwrite, slab=slab, roi_size=roi_size, overlap=overlap, blend=blend,
            sw_batch_size=sw_batch_size, workdir=workdir, **kwargs))
    if region is not None:
        raise XaimedError("a region is a segmentation target, and this model resizes its "
                          "input (a classifier): leave the region out, or explain a crop "
                          "(volume[z0:z1]) in memory with attribute().")
    size = tuple(int(n) for n in prep.input_size)
    small = yield from within(downsample_lazy_steps(volume, size, prep, slab), 0, 2,
                              "reading the volume: ")
    spacing = as_spacing(spacing)
    model_spacing = tuple(s * n / m for s, n, m in zip(spacing, shape, size, strict=True))
    inner = yield from within(attribute_in_memory_steps(
        loaded, small, method, spacing=model_spacing,
        preprocessing={"scaling": "none", "input_size": None}, **kwargs), 1, 2)
    lazy_map = upsample_lazy(inner.map, shape)
    if out is not None:
        planes = int(slab) if slab else min(shape[0], 32)
        write_zarr(out, upsample_lazy(inner.map, shape, (planes, shape[1], shape[2])),
                   spacing, overwrite=overwrite, slab=planes,
                   chunks=(planes, min(shape[1], 512), min(shape[2], 512)),
                   metadata={"kind": "attribution", "method": method})
        from napari_xaimed.io.lazy import read_zarr

        lazy_map = read_zarr(out).data
    else:
        lazy_map = da.asarray(lazy_map)
    params = {**inner.params, "preprocessing": prep.to_dict(),
              "lazy": {"model_shape": list(size), "volume_shape": list(shape),
                       "out": None if out is None else str(out)}}
    return Attribution(map=lazy_map, method=inner.method, signed=inner.signed,
                       target=inner.target, params=params, scores=inner.scores,
                       seconds=time.perf_counter() - started, device=inner.device,
                       model=inner.model)


def _attribute_windows(loaded: Any, volume: Any, method: str, prep: Preprocessing,
                       started: float, *, spacing: Any, region: Any, out: Any,
                       overwrite: bool, slab: int | None, roi_size: Any, overlap: float,
                       blend: str, sw_batch_size: int | None, workdir: Any,
                       target: int | None = None, device: Any = "auto",
                       batch_size: int | None = None, seed: int = 0, **params: Any
                       ) -> Steps[Attribution]:
    """:func:`attribute_lazy` for a model without ``input_size``: sliding windows."""
    import time

    from napari_xaimed.attribution.methods import METHODS, check_params
    from napari_xaimed.attribution.windows import attribute_windows_steps

    params = check_params(method, params)
    result = yield from attribute_windows_steps(
        loaded, volume, method, prep=prep, spacing=as_spacing(spacing), region=region,
        target=target, roi_size=roi_size, overlap=overlap, blend=blend,
        sw_batch_size=sw_batch_size, device=device, batch_size=batch_size, out=out,
        overwrite=overwrite, slab=slab, workdir=workdir, params=params)
    used = result["params"]
    record = {**params, "preprocessing": prep.to_dict(), "batch_size": batch_size,
              "seed": seed, "target": "predicted" if target is None else "given",
              "region": used.pop("region"), "channel": result["channel"],
              "windows": used,
              "lazy": {"volume_shape": [int(n) for n in volume.shape], "out": result["out"],
                       "temporary": result["temporary"], "sliding_window": True}}
    return Attribution(map=result["map"], method=method, signed=METHODS[method].signed,
                       target=result["channel"], params=record, scores=[result["score"]],
                       seconds=time.perf_counter() - started, device=result["device"],
                       model=loaded.provenance())
