"""The check of a finished attribution map: NaN or infinite values, or zero everywhere, refused
with the reason (and for Grad-CAM the layer) instead of a heatmap that says nothing.
"""

from __future__ import annotations

import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution.cams import CAMS

#: Why a method's map can be zero everywhere, said when it is.
_ZERO_REASONS = {
    "gradcam": "the layer's gradient-weighted channels are negative everywhere, and Grad-CAM "
               "keeps only the positive part: the layer holds no evidence for this target. "
               "Name another layer (layer='...') or pick another method",
    "guided_gradcam": "Grad-CAM's part is zero everywhere on this layer: name another layer "
                      "(layer='...') or pick another method",
    **{cam: "the layer's weighted channels are negative everywhere, and the map keeps only the "
            "positive part: the layer holds no evidence for this target here. Name another "
            "layer (layer='...') or pick another method" for cam in CAMS},
    "occlusion": "no window changed the score: the model is insensitive to windows of this "
                 "size here; try larger windows or another method",
    "feature_ablation": "setting no supervoxel to the baseline changed the score; try more "
                        "supervoxels, another baseline or another method",
    "shapley": "no supervoxel changed the score; try more supervoxels, another baseline or "
               "another method",
    "kernel_shap": "no supervoxel changed the score in the samples drawn; try more samples, "
                   "more supervoxels, another baseline or another method",
}


def _check_map(attribution: torch.Tensor, method: str, layer: str | None = None) -> None:
    """Refuse a map with NaN or infinite values, or one that is zero everywhere, with the
    reason (and for Grad-CAM the layer), instead of showing a heatmap that says nothing."""
    finite = torch.isfinite(attribution)
    if not bool(finite.all()):
        raise XaimedError(
            f"{method} gave {int((~finite).sum())} NaN or infinite values on this model: its "
            "scores or gradients overflow here (a saturated output, or a half-precision "
            "autocast). Try autocast=None, another baseline or another method.")
    if not bool(attribution.any()):
        reason = _ZERO_REASONS.get(method, "the target's gradient is zero everywhere: the "
                                   "score does not change with the input here (saturated or "
                                   "dead activations, or a target the model ignores). Pick "
                                   "another target or a perturbation method (occlusion)")
        on = f" (layer {layer!r})" if layer else ""
        raise XaimedError(f"{method} gave a map of zeros on this volume{on}: {reason}.")
