"""Segmentation: volumes in, Labels out.

``segment(volume, method=...)`` dispatches to the registered methods (:data:`METHODS`);
``split_instances`` turns a mask into instance labels.
"""

from napari_xaimed.segmentation.instances import split_instances
from napari_xaimed.segmentation.run import METHODS, segment, segment_steps
from napari_xaimed.segmentation.threshold import otsu_threshold, threshold_mask

__all__ = [
    "METHODS",
    "otsu_threshold",
    "segment",
    "segment_steps",
    "split_instances",
    "threshold_mask",
]
