"""Segmentation: volumes in, Labels out.

``segment(volume, method=...)`` dispatches to the registered methods (:data:`METHODS`);
``segment_steps`` gives the full :class:`SegmentationResult` (class probabilities, facts);
``split_instances`` turns a mask into instance labels (with watershed splitting);
``segment_with_model`` runs the user's model (MONAI sliding windows);
``parts_from_classes`` and ``core_parts`` build things with parts for part-aware evaluation;
``segment_lazy``, ``otsu_threshold_lazy`` and ``label_lazy`` do Otsu and components on volumes
larger than memory, slab by slab, and ``segment_model_lazy`` a network's sliding windows, band
by band (:mod:`~napari_xaimed.segmentation.lazy`).
"""

from napari_xaimed._core.progress import run_steps
from napari_xaimed.segmentation.deep import (
    ModelSegmentation,
    model_segmentation_steps,
    segment_with_model,
)
from napari_xaimed.segmentation.instances import split_instances, watershed_split
from napari_xaimed.segmentation.lazy import (
    LazySegmentation,
    label_lazy,
    otsu_threshold_lazy,
    segment_lazy,
    segment_lazy_steps,
    segment_model_lazy,
)
from napari_xaimed.segmentation.parts import core_parts, parts_from_classes
from napari_xaimed.segmentation.result import SegmentationResult
from napari_xaimed.segmentation.run import METHODS, Method, method_params, segment, segment_steps
from napari_xaimed.segmentation.threshold import (
    multi_otsu_thresholds,
    otsu_threshold,
    threshold_mask,
)

__all__ = [
    "METHODS",
    "LazySegmentation",
    "Method",
    "ModelSegmentation",
    "core_parts",
    "label_lazy",
    "SegmentationResult",
    "method_params",
    "model_segmentation_steps",
    "multi_otsu_thresholds",
    "otsu_threshold",
    "otsu_threshold_lazy",
    "parts_from_classes",
    "run_steps",
    "segment",
    "segment_lazy",
    "segment_lazy_steps",
    "segment_model_lazy",
    "segment_steps",
    "segment_with_model",
    "split_instances",
    "threshold_mask",
    "watershed_split",
]
