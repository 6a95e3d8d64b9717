"""Segmenting a lazy (dask-backed, larger than memory) layer from the segmentation dock:
the slice preview, the classical methods slab by slab and the model band by band."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed.models.loading import BUNDLED_SEGMENTER
from napari_xaimed.segmentation import SegmentationResult
from napari_xaimed.segmentation.preview import preview_slice_lazy
from napari_xaimed.viewer.widgets._job import report_error
from napari_xaimed.viewer.widgets._scratch import release, scratch_folder


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
        """A dask-backed layer (a Zarr, a NIfTI larger than memory): segment it slab by slab
        into a Zarr store in a temporary folder and show the labels lazily over it."""
        from napari_xaimed.segmentation.lazy import segment_lazy_steps

        if method == "model":
            self._run_model_lazy(layer, data, params, shown, spacing, translate, retry)
            return
        if method not in ("otsu", "threshold"):
            report_error(XaimedError(
                f"{layer.name!r} is read lazily (larger than memory): only 'otsu', "
                f"'threshold' and 'model' segment it slab by slab, not {method!r}. Pick one of "
                "them, or load a crop into memory "
                "(viewer.add_image(layer.data[z0:z1].compute()))."))
            return
        folder = scratch_folder("xaimed-labels-")
        try:  # bad options are refused here, before the job starts
            steps = segment_lazy_steps(data, folder / "labels.zarr", method, spacing,
                                       origin=translate, **params)
        except XaimedError as exc:
            release(folder)
            report_error(exc)
            return

        def done(lazy: Any, seconds: float) -> None:
            result = SegmentationResult(
                labels=lazy.labels, method=lazy.method, params=lazy.params,
                facts={"threshold": lazy.threshold, "n_instances": lazy.n_instances,
                       "labels_store": str(lazy.path)},
                spacing=lazy.spacing, kind="instances" if params.get("instances", True)
                else "mask", seconds=lazy.seconds)
            self._show_result(result, layer.name, spacing, translate, shown, seconds,
                              scratch=folder)

        self.job.start(steps, done, f"Segmenting {layer.name} ({method}, slab by slab)",
                       scratch=folder)

    def _run_model_lazy(self, layer: Any, data: Any, params: dict[str, Any],
                        shown: dict[str, Any], spacing: tuple[float, float, float],
                        translate: tuple[float, float, float], retry: Any = None) -> None:
        """The model on a lazy layer: MONAI's sliding windows band by band
        (:func:`~napari_xaimed.segmentation.lazy.segment_model_lazy_steps`) into Zarr stores,
        shown as dask layers: the labels and the foreground probability."""
        from napari_xaimed.segmentation.lazy import segment_model_lazy_steps

        whole = {"largest_component": "keeping the largest component",
                 "model_spacing": "resampling to the model's spacing",
                 "smoothing_mm": "smoothing", "autocast": "mixed precision"}
        for key, what in whole.items():
            if params.get(key) not in (None, False, 0, 0.0):
                report_error(XaimedError(
                    f"{layer.name!r} is read lazily (larger than memory): {what} ({key}) is "
                    "not done band by band. Turn it off, or load a crop into memory "
                    "(viewer.add_image(layer.data[z0:z1].compute()))."))
                return
        kwargs = {k: v for k, v in params.items() if k not in whole}
        model = kwargs.pop("model", None) or BUNDLED_SEGMENTER
        folder = scratch_folder("xaimed-labels-")

        def steps():
            lazy = yield from segment_model_lazy_steps(
                data, model, folder / "labels.zarr", spacing=spacing, origin=translate,
                probability_out=folder / "probability.zarr", **kwargs)
            from napari_xaimed.io.lazy import read_zarr

            return lazy, read_zarr(folder / "probability.zarr").data

        def done(outcome: tuple, seconds: float) -> None:
            lazy, probability = outcome
            result = SegmentationResult(
                labels=lazy.labels, method="model", params=lazy.params,
                facts={"probabilities": "foreground", "threshold": lazy.threshold,
                       "labels_store": str(lazy.path)},
                spacing=lazy.spacing, kind="classes", probabilities=[probability],
                seconds=lazy.seconds)
            self._show_result(result, layer.name, spacing, translate, shown, seconds,
                              scratch=folder)

        self.job.start(steps(), done, f"Segmenting {layer.name} (model, window band by band)",
                       scratch=folder, retry_trusted=retry)

