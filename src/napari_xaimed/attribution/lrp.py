"""Layer-wise relevance propagation on 3D networks.

Captum ships rules for 2D layers only; here ``Conv3d``, ``AvgPool3d``,
``AdaptiveAvgPool3d``, ``AdaptiveMaxPool3d`` and ``BatchNorm3d`` get the epsilon rule,
``MaxPool3d`` and ``Linear`` keep Captum's, and shape-only modules (``Flatten``, MONAI
``Reshape``, ``Identity``) get the epsilon rule too, which for a reshape hands each value's
relevance to the value it came from; any other layer type is refused with its name.
A map whose relevance does not add up to the score it explains is refused
(:func:`_check_conservation`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.models.network import inner_name

LRP_EPSILON_TYPES = (torch.nn.Conv3d, torch.nn.AvgPool3d, torch.nn.AdaptiveAvgPool3d,
                     torch.nn.AdaptiveMaxPool3d, torch.nn.BatchNorm3d)


LRP_PASS_TYPES_NAMES = ("Flatten", "Reshape", "Identity")


def _lrp_ready(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model with LRP rules on the 3D layers Captum has none for."""
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = copy.deepcopy(model)
    for name, layer in model.named_modules():
        if list(layer.children()):
            continue
        if isinstance(layer, LRP_EPSILON_TYPES) or type(layer).__name__ in LRP_PASS_TYPES_NAMES:
            layer.rule = EpsilonRule()
        elif type(layer) not in SUPPORTED_LAYERS_WITH_RULES and \
                type(layer) not in SUPPORTED_NON_LINEAR_LAYERS:
            raise XaimedError(
                f"LRP has no rule for layer {inner_name(model, name)!r} "
                f"({type(layer).__name__}): supported are Conv3d, Linear, MaxPool3d, "
                "AvgPool3d, BatchNorm3d, ReLU, Dropout, Tanh and shape-only layers. Use "
                "another method for this model.")
    return model


#: How far LRP's total relevance may drift from the explained score, as a share of the score
#: (the epsilon rule and biases absorb some: about 15% on the bundled classifier).
LRP_DRIFT = 0.5


def _check_conservation(relevance: torch.Tensor, delta: torch.Tensor) -> None:
    """Refuse an LRP map whose relevance does not add up to the score it explains: on
    networks with operations no LRP rule covers (residual additions, concatenations,
    attention) Captum's rules let relevance grow without bound, and the map is noise."""
    total = float(relevance.detach().double().sum())
    score = total + float(delta.detach().double().sum())  # Captum: delta = score - total
    if not np.isfinite(total):
        raise XaimedError(
            "LRP's relevance overflowed to NaN or infinity on this network: its layers include "
            "operations no LRP rule covers (concatenations, residual additions, attention). "
            "Pick integrated_gradients or deeplift, which handle them.")
    if abs(total - score) > LRP_DRIFT * abs(score) + 1e-6:
        raise XaimedError(
            f"LRP's relevance does not add up to the score it explains (total {total:.3g} "
            f"against a score of {score:.3g}): the network has operations no LRP rule covers "
            "(residual additions, concatenations, attention), so the map would be noise. "
            "Pick integrated_gradients or deeplift, which handle them.")
