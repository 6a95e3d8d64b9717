"""A PyTorch/MONAI segmentation network on a volume larger than memory: MONAI's sliding windows,
band of windows by band along z, into Zarr stores (the labels and, if asked, the foreground
probability): the labels of :func:`~napari_xaimed.segmentation.segment_with_model` (same
windows, importance map and blending; no ``model_spacing`` resampling).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.components.lazy import _output
from napari_xaimed.io.lazy import create_zarr, set_provenance
from napari_xaimed.io.slab_stats import _check_3d
from napari_xaimed.segmentation.result import LazySegmentation


def segment_model_lazy(volume: Any, model: Any, out: str | Path, **kwargs: Any
                       ) -> LazySegmentation:
    """Segment a volume larger than memory with a network, by sliding windows, to Zarr.

    The labels (and probability) of :func:`~napari_xaimed.segmentation.segment_with_model`
    with the same parameters: MONAI's windows and importance map, the blended logits of a
    band of windows along z written as soon as no later window touches their planes, so
    only a band of input planes and logits is in memory.

    Parameters
    ----------
    volume : array-like
        3D ``(z, y, x)``: dask, zarr, memory map or numpy.
    model : torch.nn.Module, path or "bundled-segmenter"
        As for :func:`~napari_xaimed.segmentation.segment_with_model`.
    out : str or pathlib.Path
        Zarr store for the labels (uint8).
    spacing, roi_size, overlap, blend, sw_batch_size, device, output, threshold, channel, trust
        As for :func:`~napari_xaimed.segmentation.segment_with_model`.
    preprocessing : dict, optional
        Overrides of the model's intensity scaling (statistics taken slab by slab).
    probability_out : str or pathlib.Path, optional
        Zarr store for the foreground probability (float32), when wanted.
    origin : tuple of float, optional
    slab : int, optional
        Planes read at a time.
    overwrite : bool

    Returns
    -------
    LazySegmentation
        ``method="model"``, ``threshold`` the one used, ``n_instances`` 0 (labels are
        classes), ``params`` with the windows.
    """
    return run_steps(segment_model_lazy_steps(volume, model, out, **kwargs))


def segment_model_lazy_steps(
    volume: Any,
    model: Any,
    out: str | Path,
    *,
    spacing: tuple[float, float, float] | None = None,
    roi_size: int | tuple[int, int, int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sw_batch_size: int | None = None,
    device: str = "auto",
    output: str = "softmax",
    threshold: float = 0.5,
    channel: int | None = None,
    preprocessing: dict[str, Any] | None = None,
    probability_out: str | Path | None = None,
    origin: tuple[float, float, float] | None = None,
    slab: int | None = None,
    overwrite: bool = False,
    trust: bool = False,
) -> Steps[LazySegmentation]:
    """Generator form of :func:`segment_model_lazy`: a step per band of windows written, so
    a widget shows progress and can cancel between bands."""
    import dask.array as da

    from napari_xaimed import __version__
    from napari_xaimed.models.loading import load_model
    from napari_xaimed.models.windows import forward_bands, prepare_windows
    from napari_xaimed.segmentation.deep import _labels_and_probability

    started = time.perf_counter()
    shape = _check_3d(volume)
    spacing = as_spacing(spacing)
    loaded = load_model(model, trust=trust)
    prep = loaded.preprocessing.overridden(preprocessing)
    setup = prepare_windows(loaded, volume, prep, roi_size=roi_size, overlap=overlap,
                            blend=blend, sw_batch_size=sw_batch_size, device=device,
                            slab=slab, output=output, threshold=threshold, channel=channel)
    planes = setup.planes
    labels = _output(out, shape, np.uint8, spacing, origin, planes, overwrite)
    probability = None
    if probability_out is not None:
        probability = create_zarr(probability_out, shape, np.float32, spacing, origin,
                                  (planes, min(shape[1], 512), min(shape[2], 512)),
                                  overwrite=overwrite)
    yield Progress(0, shape[0], f"{len(setup.grid.starts)} windows")
    for start, stop, logits in forward_bands(setup.net, setup.grid, setup.read_input,
                                             setup.sw):
        lab, prob = _labels_and_probability(logits[None], tuple(logits.shape[1:]), output,
                                            float(threshold), channel)
        labels[start:stop] = lab.cpu().numpy().astype(np.uint8)
        if probability is not None:
            probability[start:stop] = prob.float().cpu().numpy()
        yield Progress(stop, shape[0], f"planes {start}-{stop - 1} of {shape[0]}")
    seconds = time.perf_counter() - started
    used = {"method": "model", "roi_size": list(setup.roi), "overlap": float(overlap),
            "blend": blend, "sw_batch_size": setup.sw, "output": output,
            "threshold": float(threshold), "channel": channel,
            "preprocessing": prep.to_dict(), "windows": len(setup.grid.starts),
            "bands": len(setup.grid.bands()), "output_channels": setup.channels,
            "slab": planes, "device": str(setup.device), "lazy": True}
    set_provenance(out, {"kind": "segmentation", "params": used, "spacing": list(spacing),
                         "model": loaded.provenance(), "version": __version__,
                         "seconds": seconds})
    return LazySegmentation(labels=da.from_zarr(labels), path=Path(out), method="model",
                            threshold=float(threshold), n_instances=0, spacing=spacing,
                            params=used, seconds=seconds)
