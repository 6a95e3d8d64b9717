"""Segmentation: volumes in, Labels out.

``segment(volume, method=...)`` dispatches to the registered methods (:data:`METHODS`);
``segment_steps`` gives the full :class:`SegmentationResult` (class probabilities, facts);
``split_instances`` turns a mask into instance labels (with watershed splitting).
"""

from napari_xaimed.segmentation.instances import split_instances, watershed_split
from napari_xaimed.segmentation.result import SegmentationResult
from napari_xaimed.segmentation.run import METHODS, Method, method_params, segment, segment_steps
from napari_xaimed.segmentation.threshold import (
    multi_otsu_thresholds,
    otsu_threshold,
    threshold_mask,
)

__all__ = [
    "METHODS",
    "Method",
    "SegmentationResult",
    "method_params",
    "multi_otsu_thresholds",
    "otsu_threshold",
    "segment",
    "segment_steps",
    "split_instances",
    "threshold_mask",
    "watershed_split",
]
