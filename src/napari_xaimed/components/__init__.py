"""Connected components, in memory (:func:`connected_components`, :func:`value_components`) and
slab by slab for volumes larger than memory (:func:`label_lazy`)."""

from napari_xaimed.components.lazy import label_lazy
from napari_xaimed.components.memory import connected_components, value_components

__all__ = ["connected_components", "label_lazy", "value_components"]
