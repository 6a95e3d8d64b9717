"""Where a segmentation lands in the viewer: its labels, class probabilities and preview."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.provenance import provenance
from napari_xaimed.segmentation import SegmentationResult
from napari_xaimed.viewer.layers import add_or_update, heatmap_layer, labels_layer, output_name
from napari_xaimed.viewer.widgets._scratch import keep_while_shown


def probability_name(k: int, source: str, foreground: bool = False) -> str:
    """``"Class 2 probability [mri]"``, or ``"Foreground probability [mri]"`` for a model."""
    return output_name("Foreground probability" if foreground else f"Class {k} probability",
                       source)


class SegmentationOutputs:
    """The output layers of :class:`~napari_xaimed.viewer.widgets.SegmentationWidget`."""

    viewer: Any
    method: Any
    _probabilities: dict[str, list[str]]

    def _show_preview(self, layer: Any, z: int, mask: np.ndarray,
                      spacing: tuple[float, float, float],
                      translate: tuple[float, float, float]) -> None:
        prov = provenance("segmentation preview", sources=[layer.name],
                          params={"method": self.method.value, "slice": z,
                                  **self._plain_params()})
        at = (translate[0] + z * spacing[0], *translate[1:])
        add_or_update(self.viewer, labels_layer(
            mask[np.newaxis], output_name("Segmentation preview", layer.name), spacing,
            translate=at, provenance=prov))


    def _show_result(self, result: SegmentationResult, source: str,
                     spacing: tuple[float, float, float], translate: tuple[float, float, float],
                     params: dict[str, Any], seconds: float,
                     inputs: dict[str, Any] | None = None, scratch: Path | None = None) -> None:
        # facts apart, as the CLI keeps them: merged into params, the model's description
        # replaced the model parameter and the device found replaced "auto", so the
        # parameters no longer reran the segmentation
        prov = provenance("segmentation", sources=[source], seconds=seconds,
                          params={"method": result.method, **params}, facts=result.facts,
                          label_kind=result.kind, inputs=inputs)
        shown = add_or_update(self.viewer, labels_layer(
            result.labels, output_name("Segmentation", source), spacing, translate=translate,
            provenance=prov))
        keep_while_shown(self.viewer, shown, scratch)  # a lazy result reads its store there
        names = []
        if result.probabilities is not None:
            foreground = result.facts.get("probabilities") == "foreground"
            for k, probability in enumerate(result.probabilities, start=1):
                name = probability_name(k, source, foreground)
                kind = {"kind": "foreground probability"} if foreground else {
                    "kind": "class probability", "class": k}
                heat = add_or_update(self.viewer, heatmap_layer(
                    probability, name, spacing, signed=False, translate=translate,
                    provenance={**prov, **kind}, contrast_limits=(0.0, 1.0),
                    visible=foreground))
                keep_while_shown(self.viewer, heat, scratch)
                names.append(name)
        for stale in set(self._probabilities.get(source, [])) - set(names):
            if stale in self.viewer.layers and "xaimed" in self.viewer.layers[stale].metadata:
                self.viewer.layers.remove(stale)
        self._probabilities[source] = names
