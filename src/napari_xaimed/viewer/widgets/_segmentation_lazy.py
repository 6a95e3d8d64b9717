"""Segmenting a lazy (dask-backed, larger than memory) layer from the segmentation dock:
the slice preview, the classical methods slab by slab and the model band by band."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed.segmentation import SegmentationResult, segment_steps
from napari_xaimed.segmentation.lazy import check_dask_segmentation
from napari_xaimed.segmentation.preview import preview_slice_lazy
from napari_xaimed.viewer.widgets._job import report_error
from napari_xaimed.viewer.widgets._scratch import scratch_folder


class LazySegmentation:
    """The lazy-layer runs of :class:`~napari_xaimed.viewer.widgets.SegmentationWidget`."""

    job: Any
    method: Any
    _lazy_thresholds: dict[tuple, float]

    def _preview_lazy(self, layer: Any, z: int, spacing: tuple[float, float, float],
                      translate: tuple[float, float, float]) -> None:
        """A dask-backed layer: one plane read in a worker; Otsu's slab-by-slab histogram pass
        runs once per layer and class count (its threshold is kept for the next previews)."""
        method, params = self.method.value, self.params()
        data = layer.data
        # a dask array's name is a token of its graph: unlike id(), never reused by another
        key = (getattr(data, "name", id(data)), method, params.get("classes"),
               params.get("value"))
        known = self._lazy_thresholds.get(key)

        def steps():
            yield Progress(0, 1, f"{layer.name}: preview of slice {z}")
            return preview_slice_lazy(data, z, method, spacing, threshold=known, **params)

        def done(found: tuple[np.ndarray, float], seconds: float) -> None:
            mask, threshold = found
            self._lazy_thresholds = {key: threshold}  # one layer's at a time: a float each
            self._show_preview(layer, z, mask, spacing, translate)

        self.job.start(steps(), done, f"Previewing slice {z} of {layer.name}")


    def _run_lazy(self, layer: Any, data: Any, method: str, params: dict[str, Any],
                  shown: dict[str, Any], spacing: tuple[float, float, float],
                  translate: tuple[float, float, float], retry: Any = None) -> None:
        """A dask-backed layer (a Zarr, a NIfTI larger than memory): segment_steps segments it
        slab by slab (the model window band by window band) into Zarr stores in a scratch
        folder, shown lazily over them; what needs the whole volume is refused before the
        job starts."""
        try:
            check_dask_segmentation(method, params)
        except XaimedError as exc:
            report_error(XaimedError(f"{layer.name!r}: {exc}"))
            return
        folder = scratch_folder("xaimed-labels-")

        def steps():
            return (yield from segment_steps(data, method, spacing, out=folder / "labels.zarr",
                                             origin=translate, **params))

        def done(result: SegmentationResult, seconds: float) -> None:
            self._show_result(result, layer.name, spacing, translate, shown, seconds,
                              scratch=folder)

        self.job.start(steps(), done, f"Segmenting {layer.name} ({method}, slab by slab)",
                       scratch=folder, retry_trusted=retry)
