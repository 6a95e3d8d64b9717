"""Models: loading with its trust rules, the bundled networks and their weights, the device,
preprocessing, the network surgery for hooks and the sliding windows shared by segmentation
and attribution; what a model was trained on and the warning for inputs far outside it.
"""

from napari_xaimed.models.device import pick_device
from napari_xaimed.models.domain import (
    OutOfDistributionWarning,
    check_input,
    training_statistics,
)
from napari_xaimed.models.loading import (
    BUNDLED,
    BUNDLED_SEGMENTER,
    LoadedModel,
    build_network,
    load_model,
)
from napari_xaimed.models.preprocess import Preprocessing
from napari_xaimed.models.recorded import recorded_model
from napari_xaimed.models.trust import (
    register_network,
    registered_networks,
)

__all__ = [
    "BUNDLED",
    "BUNDLED_SEGMENTER",
    "LoadedModel",
    "OutOfDistributionWarning",
    "Preprocessing",
    "build_network",
    "check_input",
    "load_model",
    "pick_device",
    "recorded_model",
    "register_network",
    "registered_networks",
    "training_statistics",
]
