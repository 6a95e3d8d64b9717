"""Which attribution methods hook the model's modules, and so need the network surgery of
:mod:`napari_xaimed.models.network` (a plain ``nn.Module``, one module per call for some)."""

from __future__ import annotations

from torch import nn

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution.cams import CAMS
from napari_xaimed.models.network import is_scripted

#: Methods that hook the model's modules (and so need a plain ``nn.Module``).
HOOKED = ("guided_backprop", "deeplift", "gradcam", "guided_gradcam", "lrp", *CAMS)


#: Of those, the ones whose hooks keep state per module and so need one module per call.
PER_CALL = ("guided_backprop", "deeplift", "guided_gradcam", "lrp")


def refuse_scripted(method: str, model: nn.Module) -> None:
    """A clear error for a hook-based method on a TorchScript model."""
    if method in HOOKED and is_scripted(model):
        raise XaimedError(
            f"{method} needs hooks on the model's layers, and a TorchScript model runs "
            "without them (its map would silently be another method's): pass the network as "
            "a torch.nn.Module, or as a state dict with a JSON config naming the network "
            "(load_model), or pick a gradient or perturbation method (saliency, "
            "integrated_gradients, occlusion ...).")
